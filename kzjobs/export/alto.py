"""ALTO XML v4, one file per page.

The page's characters form one ``TextBlock``; each column is a ``TextLine`` written
top to bottom (``BASEDIRECTION="ttb"``), the lines in reading order (right to left).
Kuzushiji has no word spaces, so a column is one ``String`` (``WC``: its mean
confidence) whose ``Glyph``s are its characters with their boxes and ``GC``.
Coordinates are image pixels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lxml import etree
from lxml.builder import ElementMaker

from kzjobs.export.common import SOFTWARE, bounds, column_text, source_name, text, xml_bytes

if TYPE_CHECKING:
    from kzjobs.recognize.outputs import PageResult

NS = "http://www.loc.gov/standards/alto/ns-v4#"
SCHEMA_LOCATION = "http://www.loc.gov/standards/alto/v4/alto-4-4.xsd"
XSI = "http://www.w3.org/2001/XMLSchema-instance"


def _box(element: etree._Element, x: float, y: float, w: float, h: float) -> None:
    for name, value in (("HPOS", x), ("VPOS", y), ("WIDTH", w), ("HEIGHT", h)):
        element.set(name, str(value))


def _conf(value: float) -> str:
    return f"{min(1.0, max(0.0, value)):.4f}"


def alto_page(page: PageResult) -> bytes:
    """The page as an ALTO v4 document."""
    e = ElementMaker(namespace=NS, nsmap={None: NS, "xsi": XSI})
    processing = e.Processing(e.processingSoftware(e.softwareName(SOFTWARE)), ID="proc1")
    description = e.Description(
        e.MeasurementUnit("pixel"),
        e.sourceImageInformation(e.fileName(source_name(page))),
        processing,
    )
    space = e.PrintSpace(ID="space1")
    _box(space, 0, 0, page.width, page.height)
    cols = page.in_reading_order()
    if cols:
        block = e.TextBlock(ID="block1", BASEDIRECTION="ttb", PROCESSINGREFS="proc1")
        _box(block, *bounds(page.chars))
        space.append(block)
        for n, col in enumerate(cols, 1):
            line = e.TextLine(ID=f"line{n}", BASEDIRECTION="ttb")
            _box(line, *bounds(col))
            string = e.String(ID=f"string{n}", CONTENT=column_text(col),
                              WC=_conf(sum(c.confidence for c in col) / len(col)))
            _box(string, *bounds(col))
            for k, c in enumerate(col, 1):
                glyph = e.Glyph(ID=f"glyph{n}_{k}", CONTENT=text(c), GC=_conf(c.confidence))
                _box(glyph, c.x, c.y, c.w, c.h)
                string.append(glyph)
            line.append(string)
            block.append(line)
    layout_page = e.Page(space, ID="page1", PHYSICAL_IMG_NR=str(page.source.get("page") or 1))
    _box(layout_page, 0, 0, page.width, page.height)
    del layout_page.attrib["HPOS"], layout_page.attrib["VPOS"]
    root = e.alto(description, e.Layout(layout_page), SCHEMAVERSION="4.4")
    root.set(f"{{{XSI}}}schemaLocation", f"{NS} {SCHEMA_LOCATION}")
    return xml_bytes(root)
