"""Reading order of a page: vertical columns right to left, each top to bottom."""

from __future__ import annotations

from collections.abc import Sequence
from statistics import median

from kzjobs.data.format import Box


def columns(boxes: Sequence[Box]) -> list[list[int]]:
    """Indices of ``boxes`` grouped into columns, in reading order.

    Boxes are taken right to left by their centre; a box joins the current column
    when its centre lies within half a typical character width of the column's
    centre line, which tolerates the slight drift of hand-written columns.
    """
    if not boxes:
        return []
    tolerance = 0.5 * median(b.w for b in boxes)
    order = sorted(range(len(boxes)), key=lambda i: -boxes[i].center[0])
    cols: list[list[int]] = []
    centre = total = 0.0  # the current column's centre line: the running mean of its centres
    for i in order:
        cx = boxes[i].center[0]
        if not cols or abs(cx - centre) > tolerance:
            cols.append([i])
            total = 0.0
        else:
            cols[-1].append(i)
        total += cx
        centre = total / len(cols[-1])
    return [sorted(col, key=lambda i: boxes[i].center[1]) for col in cols]


def reading_order(boxes: Sequence[Box]) -> list[int]:
    return [i for col in columns(boxes) for i in col]
