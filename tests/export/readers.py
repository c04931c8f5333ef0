"""Reading each export format back with a real reader, for the export tests."""

from __future__ import annotations

import io
import json
import re

import pikepdf
import pypdfium2 as pdfium
from lxml import etree

from kzjobs.data.format import code_to_char
from kzjobs.recognize.outputs import PageResult

TEI = "{http://www.tei-c.org/ns/1.0}"
XYWH = re.compile(r"^(?P<canvas>.+)#xywh=(\d+),(\d+),(\d+),(\d+)$")


def reading_order(page: PageResult) -> list[tuple[str, int, int, int, int]]:
    """(character, x, y, w, h) of each character in reading order."""
    return [(code_to_char(c.code), c.x, c.y, c.w, c.h)
            for col in page.in_reading_order() for c in col]


def columns(page: PageResult) -> list[str]:
    return [line for line in page.transcript().split("\n") if line]


def pdf_pages_text(data: bytes) -> list[str]:
    """Each page's text as Chromium's PDF engine (pdfium) gives it to selection/search."""
    doc = pdfium.PdfDocument(data)
    try:
        return [doc[i].get_textpage().get_text_range().replace("\r\n", "\n")
                for i in range(len(doc))]
    finally:
        doc.close()


def pdf_finds(data: bytes, page_no: int, needle: str) -> bool:
    """Whether the viewer's search finds ``needle`` on the page."""
    doc = pdfium.PdfDocument(data)
    try:
        return doc[page_no].get_textpage().search(needle, match_case=True).get_next() is not None
    finally:
        doc.close()


def check_annotation_page(data: dict, page: PageResult, canvas: str) -> None:
    """A IIIF Presentation 3 AnnotationPage: one supplementing annotation per character,
    in reading order, each targeting ``canvas`` at the character's box."""
    assert data["@context"] == "http://iiif.io/api/presentation/3/context.json"
    assert data["type"] == "AnnotationPage" and data["id"].startswith(("http", "file", "s3"))
    ids = [a["id"] for a in data["items"]]
    assert len(set(ids)) == len(ids)
    got = []
    for a in data["items"]:
        assert a["type"] == "Annotation" and a["motivation"] == "supplementing"
        assert a["body"]["type"] == "TextualBody" and a["body"]["format"] == "text/plain"
        m = XYWH.match(a["target"])
        assert m and m["canvas"] == canvas, a["target"]
        got.append((a["body"]["value"], *map(int, m.groups()[1:])))
    assert got == reading_order(page)
    json.dumps(data)  # plain JSON


def pdf_structure(data: bytes) -> list[dict]:
    """Per page: its image's size, whether the text is invisible (render mode 3) and the
    font's encoding / embedding / ToUnicode."""
    found = []
    with pikepdf.open(io.BytesIO(data)) as pdf:
        for page in pdf.pages:
            ops = [str(op) for _, op in pikepdf.parse_content_stream(page)]
            modes = [operands[0] for operands, op in pikepdf.parse_content_stream(page)
                     if str(op) == "Tr"]
            font = page.Resources.Font.F1
            descendant = font.DescendantFonts[0]
            images = {name: (im.Width, im.Height)
                      for name, im in (page.Resources.get("/XObject") or {}).items()}
            found.append({
                "images": images, "render_modes": [int(m) for m in modes],
                "text_ops": ops.count("Tj"), "encoding": str(font.Encoding),
                "embedded": "/FontFile2" in descendant.FontDescriptor,
                "to_unicode": "/ToUnicode" in font,
            })
    return found


def tei_text(root: etree._Element) -> list[str]:
    """The TEI's text, one string per page (split at pb), columns split at lb."""
    pages: list[str] = []
    for el in root.iter(f"{TEI}pb", f"{TEI}lb", f"{TEI}c"):
        if el.tag == f"{TEI}pb":
            pages.append("")
        elif el.tag == f"{TEI}lb":
            pages[-1] += "\n" if pages[-1] else ""
        else:
            pages[-1] += el.text
    return pages
