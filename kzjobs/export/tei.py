"""TEI P5, one file per book.

The ``facsimile`` has a ``surface`` per page (its image, in pixels) with a ``zone`` per
column and per character. The text gives each page a ``<pb facs="#surface"/>``, each
column a ``<lb facs="#zone"/>``, and each character a ``<c facs="#zone">``, so a TEI
tool can show any character over the scan. Ids are ordinal (``p3c2g5``: page 3,
column 2, character 5) because page ids need not be XML names.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from lxml import etree
from lxml.builder import ElementMaker

from kzjobs.export.common import (
    SOFTWARE,
    bounds,
    software_version,
    source_name,
    text,
    xml_bytes,
)

if TYPE_CHECKING:
    from kzjobs.recognize.outputs import PageResult

NS = "http://www.tei-c.org/ns/1.0"
XML_ID = "{http://www.w3.org/XML/1998/namespace}id"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"


def _zone(e: ElementMaker, zone_id: str, kind: str, x: int, y: int, w: int, h: int,
          ) -> etree._Element:
    return e.zone({XML_ID: zone_id}, type=kind, ulx=str(x), uly=str(y), lrx=str(x + w),
                  lry=str(y + h))


def _graphic_url(page: PageResult) -> str:
    """The page's image: its IIIF canvas when it came from a manifest, else its file."""
    return str(page.source.get("canvas") or source_name(page))


def tei_book(book: str, pages: Iterable[PageResult]) -> bytes:
    """The book's pages (in book order) as one TEI document."""
    e = ElementMaker(namespace=NS, nsmap={None: NS})
    facsimile = e.facsimile()
    p = e.p()
    sources: list[str] = []
    for n, page in enumerate(pages, 1):
        surface_id = f"p{n}"
        surface = e.surface({XML_ID: surface_id}, e.graphic(
            url=_graphic_url(page), width=f"{page.width}px", height=f"{page.height}px"),
            n=page.image_id, ulx="0", uly="0", lrx=str(page.width), lry=str(page.height))
        facsimile.append(surface)
        p.append(e.pb(n=str(page.source.get("page") or n), facs=f"#{surface_id}"))
        for k, col in enumerate(page.in_reading_order(), 1):
            col_id = f"{surface_id}c{k}"
            surface.append(_zone(e, col_id, "column", *bounds(col)))
            p.append(e.lb(facs=f"#{col_id}"))
            for j, c in enumerate(col, 1):
                char_id = f"{col_id}g{j}"
                surface.append(_zone(e, char_id, "character", c.x, c.y, c.w, c.h))
                p.append(e.c(text(c), facs=f"#{char_id}", cert=f"{c.confidence:.4f}"))
        for ref in (page.source.get("manifest"), page.source.get("name")):
            if ref and str(ref) not in sources:
                sources.append(str(ref))
    header = e.teiHeader(e.fileDesc(
        e.titleStmt(e.title(book)),
        e.publicationStmt(e.p(f"Machine transcription by {SOFTWARE}; not proofread.")),
        e.sourceDesc(*[e.p(s) for s in sources] or [e.p(f"The scanned pages of {book}.")]),
    ), e.encodingDesc(e.appInfo(e.application(e.label(SOFTWARE), ident=SOFTWARE,
                                              version=software_version()))))
    root = e.TEI(header, facsimile, e.text(e.body(p)), {XML_LANG: "ja"})
    return xml_bytes(root, mixed=(p,))
