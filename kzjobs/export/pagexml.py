"""PAGE XML (2019-07-15 schema), one file per page.

Each column is a ``TextRegion`` (read top to bottom) holding one ``TextLine``, one
``Word`` (kuzushiji has no word spaces) and a ``Glyph`` per character, every level with
its ``Coords`` and a ``TextEquiv`` whose ``conf`` is the character's confidence (the
mean, above a glyph). The ``ReadingOrder`` lists the columns right to left.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lxml import etree
from lxml.builder import ElementMaker

from kzjobs.export.common import (
    SOFTWARE,
    bounds,
    column_text,
    created,
    source_name,
    text,
    xml_bytes,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from kzjobs.recognize.outputs import Char, PageResult

NS = "http://schema.primaresearch.org/PAGE/gts/pagecontent/2019-07-15"
SCHEMA_LOCATION = f"{NS}/pagecontent.xsd"
XSI = "http://www.w3.org/2001/XMLSchema-instance"


def _points(x: int, y: int, w: int, h: int) -> str:
    """A box as PAGE's polygon: corners clockwise from the top left."""
    return f"{x},{y} {x + w},{y} {x + w},{y + h} {x},{y + h}"


def _equiv(e: ElementMaker, value: str, confs: Sequence[float]) -> etree._Element:
    conf = min(1.0, max(0.0, sum(confs) / len(confs)))
    return e.TextEquiv(e.Unicode(value), conf=f"{conf:.4f}")


def page_xml(page: PageResult) -> bytes:
    """The page as a PAGE XML document."""
    e = ElementMaker(namespace=NS, nsmap={None: NS, "xsi": XSI})
    stamp = created().strftime("%Y-%m-%dT%H:%M:%S")
    metadata = e.Metadata(e.Creator(SOFTWARE), e.Created(stamp), e.LastChange(stamp))
    layout = e.Page(imageFilename=source_name(page), imageWidth=str(page.width),
                    imageHeight=str(page.height))
    cols = page.in_reading_order()
    if cols:
        group = e.OrderedGroup(id="ro1", caption="columns, right to left")
        layout.append(e.ReadingOrder(group))
    for n, col in enumerate(cols, 1):
        region_id = f"r{n}"
        group.append(e.RegionRefIndexed(index=str(n - 1), regionRef=region_id))
        layout.append(_region(e, region_id, col))
    root = e.PcGts(metadata, layout)
    root.set(f"{{{XSI}}}schemaLocation", f"{NS} {SCHEMA_LOCATION}")
    return xml_bytes(root)


def _region(e: ElementMaker, region_id: str, col: Sequence[Char]) -> etree._Element:
    coords = e.Coords(points=_points(*bounds(col)))
    confs = [c.confidence for c in col]
    word = e.Word(e.Coords(points=_points(*bounds(col))), id=f"{region_id}l1w1",
                  readingDirection="top-to-bottom")
    for k, c in enumerate(col, 1):
        word.append(e.Glyph(e.Coords(points=_points(c.x, c.y, c.w, c.h)),
                            _equiv(e, text(c), [c.confidence]), id=f"{region_id}l1w1g{k}"))
    word.append(_equiv(e, column_text(col), confs))
    line = e.TextLine(e.Coords(points=_points(*bounds(col))), word,
                      _equiv(e, column_text(col), confs), id=f"{region_id}l1",
                      readingDirection="top-to-bottom")
    return e.TextRegion(coords, line, _equiv(e, column_text(col), confs), id=region_id,
                        type="paragraph", readingDirection="top-to-bottom",
                        textLineOrder="right-to-left")

