"""Searchable PDF, one file per book: each page image with an invisible text layer.

The text is written vertically, as the book is: a Type0 font with the ``Identity-V``
encoding (vertical writing mode), each character drawn in render mode 3 (invisible)
with a text matrix that puts its em square over its box, in reading order: columns
right to left, each top to bottom. A viewer's selection and search (and any text
extractor) then give the characters in that order. The font is IPAex Mincho, subset to
the book's characters with fontTools and embedded, with a ToUnicode map, so copied text
is Unicode even for characters the font cannot draw.

pikepdf (qpdf) writes the objects. No maintained Python library writes a vertical
(Identity-V) embedded TrueType font: reportlab and fpdf2 write horizontal text only, so
the font dictionaries and the ToUnicode CMap (a fixed PostScript-like text format) are
built here.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import pikepdf
from pikepdf import Array, Dictionary, Name, Operator

from kzjobs.export.common import bounds, text

if TYPE_CHECKING:
    from PIL import Image

    from kzjobs.recognize.outputs import PageResult

log = logging.getLogger(__name__)

FONT = "ipaex-mincho"  # kzjobs.synth.fonts: the Debian package fonts-ipaexfont-mincho
DEFAULT_DPI = 300  # for an image that does not say its resolution
JPEG_QUALITY = 85
# pdfium drops a character drawn within 7% of its width from the same character (as an
# overprint); repeats are moved apart by more than that.
DUPLICATE_STEP = 0.1


class VerticalFont:
    """The characters of a book as an embedded CID font written top to bottom.

    Each distinct character gets a CID (1, 2, ... in code point order); the CID maps to
    its glyph in the subset font (0, the empty .notdef, when the font lacks it) and,
    through ToUnicode, back to the character.
    """

    def __init__(self, chars: Iterable[str], font_file: Path) -> None:
        self.cids = {ch: n for n, ch in enumerate(sorted(set(chars)), 1)}
        self.font_file = font_file

    def encode(self, ch: str) -> bytes:
        return self.cids[ch].to_bytes(2, "big")

    def _subset(self) -> tuple[bytes, list[int], dict[str, int]]:
        """(subset font file, glyph id per CID, metrics) for the book's characters."""
        from fontTools import subset
        from fontTools.ttLib import TTFont

        logging.getLogger("fontTools").setLevel(logging.ERROR)
        options = subset.Options()
        options.layout_features = []  # invisible text: no shaping, vertical forms included
        options.name_IDs = ["*"]
        options.notdef_outline = True
        with TTFont(self.font_file, lazy=True) as font:  # glyphs decoded as needed
            # A character without an outline in this font keeps its CID, mapped to .notdef.
            drawable = [ch for ch in self.cids if ord(ch) in font.getBestCmap()]
            subsetter = subset.Subsetter(options)
            subsetter.populate(unicodes=[ord(ch) for ch in drawable])
            subsetter.subset(font)
            font.recalcTimestamp = False  # same characters, same bytes
            cmap = font.getBestCmap()
            gids = [0] * (len(self.cids) + 1)
            for ch, cid in self.cids.items():
                if ord(ch) in cmap:
                    gids[cid] = font.getGlyphID(cmap[ord(ch)])
            head, hhea = font["head"], font["hhea"]
            scale = 1000 / head.unitsPerEm
            metrics = {
                "bbox": [round(v * scale) for v in
                         (head.xMin, head.yMin, head.xMax, head.yMax)],
                "ascent": round(hhea.ascent * scale),
                "descent": round(hhea.descent * scale),
            }
            buf = io.BytesIO()
            font.save(buf)
        return buf.getvalue(), gids, metrics

    def to_unicode(self) -> bytes:
        """The ToUnicode CMap: every CID to its character (UTF-16BE, so past the BMP too)."""
        entries = [f"<{cid:04X}> <{ch.encode('utf-16-be').hex().upper()}>"
                   for ch, cid in self.cids.items()]
        chunks = []
        for i in range(0, len(entries), 100):  # at most 100 entries per bfchar block
            block = entries[i:i + 100]
            chunks.append(f"{len(block)} beginbfchar\n" + "\n".join(block) + "\nendbfchar")
        return (
            "/CIDInit /ProcSet findresource begin\n12 dict begin\nbegincmap\n"
            "/CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def\n"
            "/CMapName /Adobe-Identity-UCS def\n/CMapType 2 def\n"
            "1 begincodespacerange\n<0000> <FFFF>\nendcodespacerange\n"
            + "\n".join(chunks)
            + "\nendcmap\nCMapName currentdict /CMap defineresource pop\nend\nend\n"
        ).encode("ascii")

    def add_to(self, pdf: pikepdf.Pdf) -> pikepdf.Object:
        """The Type0 font, made an indirect object of ``pdf``."""
        data, gids, metrics = self._subset()
        # The subset tag (six capitals) names this subset, from its characters.
        digest = hashlib.sha256("".join(self.cids).encode("utf-8", "surrogatepass")).digest()
        tag = "".join(chr(ord("A") + b % 26) for b in digest[:6])
        name = Name(f"/{tag}+IPAexMincho")
        descriptor = pdf.make_indirect(Dictionary(
            Type=Name.FontDescriptor, FontName=name, Flags=4, FontBBox=Array(metrics["bbox"]),
            ItalicAngle=0, Ascent=metrics["ascent"], Descent=metrics["descent"],
            CapHeight=metrics["ascent"], StemV=80,
            FontFile2=pikepdf.Stream(pdf, data, Length1=len(data)),
        ))
        cid_to_gid = b"".join(g.to_bytes(2, "big") for g in gids)
        descendant = pdf.make_indirect(Dictionary(
            Type=Name.Font, Subtype=Name.CIDFontType2, BaseFont=name,
            CIDSystemInfo=Dictionary(Registry=pikepdf.String("Adobe"),
                                     Ordering=pikepdf.String("Identity"), Supplement=0),
            FontDescriptor=descriptor, DW=1000,
            # Vertical metrics: the origin at the em square's top centre, advance one em
            # down, so a glyph drawn at a box's top centre fills the box.
            DW2=Array([880, -1000]),
            CIDToGIDMap=pikepdf.Stream(pdf, cid_to_gid),
        ))
        return pdf.make_indirect(Dictionary(
            Type=Name.Font, Subtype=Name.Type0, BaseFont=name, Encoding=Name("/Identity-V"),
            DescendantFonts=Array([descendant]),
            ToUnicode=pikepdf.Stream(pdf, self.to_unicode()),
        ))


def _dpi(image: Image.Image | None) -> float:
    dpi = (image.info.get("dpi") or (0, 0))[1] if image is not None else 0
    return float(dpi) if dpi and 50 <= float(dpi) <= 2400 else DEFAULT_DPI


def _text_layer(page: PageResult, font: VerticalFont, scale: float, height: float,
                ) -> list[tuple[list, Operator]]:
    """The page's characters, invisible, each filling its box, in reading order."""
    ops: list[tuple[list, Operator]] = [([], Operator("BT")), ([3], Operator("Tr")),
                                        ([Name.F1, 1], Operator("Tf"))]
    for col in page.in_reading_order():
        # A column is one vertical line: its characters share its centre line, as set
        # type does. That is also what keeps a viewer's order: pdfium (Chromium's
        # viewer) sorts characters that it takes for one horizontal line by x, which
        # would swap a small character with a wide one just below it if it sat a pixel
        # further right.
        x0, _, w, _ = bounds(col)
        axis = (x0 + w / 2) * scale
        placed: list[tuple[str, float]] = []
        for c in col:
            top = height - c.y * scale
            # The same character again on (nearly) the same spot would be taken for an
            # overprint (fake bold) and dropped by pdfium: a tenth of its width lower, it
            # stays, as it is in the transcript.
            step = DUPLICATE_STEP * c.w * scale
            while any(ch == text(c) and abs(t - top) < step for ch, t in placed[-8:]):
                top -= step
            placed.append((text(c), top))
            # Font size 1 and the box in the matrix: the em square is w wide, h tall, and
            # (vertical mode) its top centre is the text origin.
            ops.append(([c.w * scale, 0, 0, c.h * scale, axis, top], Operator("Tm")))
            ops.append(([pikepdf.String(font.encode(text(c)))], Operator("Tj")))
    ops.append(([], Operator("ET")))
    return ops


def _rounded(ops: list[tuple[list, Operator]]) -> list[tuple[list, Operator]]:
    """Operands rounded to 1/1000 pt: shorter streams, and bytes that do not depend on
    float formatting noise."""
    return [([round(v, 3) if isinstance(v, float) else v for v in operands], op)
            for operands, op in ops]


def searchable_pdf(pages: Iterable[tuple[PageResult, Image.Image | None]],
                   chars: Iterable[str], out: BinaryIO, font_file: Path | None = None) -> int:
    """Write one PDF of ``pages`` (in book order, each with its image, or None when the
    image could not be read: the page then has its text layer on white) to ``out``.

    ``chars``: every character of the pages (the font is subset to them first, so
    pages are taken one at a time). Returns the number of pages.
    """
    if font_file is None:
        from kzjobs.synth.fonts import font_path

        font_file = font_path(FONT)
    with pikepdf.new() as pdf:  # closed on return: the pages' images are freed
        return _write(pdf, pages, VerticalFont(chars, font_file), out)


def _write(pdf: pikepdf.Pdf, pages: Iterable[tuple[PageResult, Image.Image | None]],
           font: VerticalFont, out: BinaryIO) -> int:
    font_ref = font.add_to(pdf)
    count = 0
    for page, image in pages:
        scale = 72 / _dpi(image)
        width, height = page.width * scale, page.height * scale
        resources = Dictionary(Font=Dictionary(F1=font_ref))
        ops: list[tuple[list, Operator]] = []
        if image is not None:
            resources.XObject = Dictionary(Im0=_image_stream(pdf, image))
            ops += [([], Operator("q")), ([width, 0, 0, height, 0, 0], Operator("cm")),
                    ([Name.Im0], Operator("Do")), ([], Operator("Q"))]
        ops += _text_layer(page, font, scale, height)
        content = pikepdf.Stream(pdf, pikepdf.unparse_content_stream(_rounded(ops)))
        pdf.pages.append(pikepdf.Page(Dictionary(
            Type=Name.Page, MediaBox=Array([0, 0, round(width, 3), round(height, 3)]),
            Resources=resources, Contents=content)))
        count += 1
    pdf.docinfo.Producer = "kzjobs"
    pdf.save(out, deterministic_id=True, compress_streams=True,
             object_stream_mode=pikepdf.ObjectStreamMode.generate)
    return count


def _image_stream(pdf: pikepdf.Pdf, image: Image.Image) -> pikepdf.Stream:
    """The page image as a JPEG XObject (grey stays grey)."""
    grey = image.mode in ("1", "L", "LA")
    pixels = image.convert("L" if grey else "RGB")
    buf = io.BytesIO()
    pixels.save(buf, format="JPEG", quality=JPEG_QUALITY)
    return pikepdf.Stream(pdf, buf.getvalue(), Type=Name.XObject, Subtype=Name.Image,
                          Width=pixels.width, Height=pixels.height,
                          ColorSpace=Name.DeviceGray if grey else Name.DeviceRGB,
                          BitsPerComponent=8, Filter=Name.DCTDecode)
