"""What the format writers share: characters, boxes, ids and XML serialisation."""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from kzjobs.data.format import code_to_char

if TYPE_CHECKING:
    from lxml import etree

    from kzjobs.recognize.outputs import Char, PageResult

SOFTWARE = "kzjobs"


def software_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(SOFTWARE)
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0"


def text(c: Char) -> str:
    return code_to_char(c.code)


def column_text(column: Sequence[Char]) -> str:
    return "".join(map(text, column))


def bounds(chars: Sequence[Char]) -> tuple[int, int, int, int]:
    """(x, y, w, h) of the smallest box around ``chars``."""
    x0 = min(c.x for c in chars)
    y0 = min(c.y for c in chars)
    x1 = max(c.x + c.w for c in chars)
    y1 = max(c.y + c.h for c in chars)
    return x0, y0, x1 - x0, y1 - y0


def source_name(page: PageResult) -> str:
    """The page's original file name when the inputs kept it, else its id."""
    return str(page.source.get("name") or page.image_id)


def book_order(page: PageResult) -> tuple[int, str]:
    """A page's place in its book: its page number in its file, then its id."""
    return int(page.source.get("page") or 0), page.image_id


def created() -> datetime:
    """The time the XML formats' required creation stamps carry.

    Not the clock: each writer must give the same bytes for the same pages (a re-run
    rebuilds them identically). SOURCE_DATE_EPOCH is the reproducible-builds variable
    for this; unset, the epoch says "not recorded".
    """
    return datetime.fromtimestamp(int(os.environ.get("SOURCE_DATE_EPOCH", "0")), UTC)


def xml_bytes(root: etree._Element, *, mixed: tuple[etree._Element, ...] = ()) -> bytes:
    """The document, indented, except inside the ``mixed`` content elements, where
    whitespace would be text (a space between two characters of a line)."""
    from lxml import etree

    etree.indent(root, space="  ")
    for element in mixed:
        element.text = None
        for child in element.iterdescendants():
            child.tail = None
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")
