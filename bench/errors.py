"""Where a reading goes wrong: every true character of the held-out pages, by what became
of it in a decided reading (``image_id, x, y, w, h, code`` per kept box).

Matched as the competition metric matches (:mod:`kzjobs.method.metric`): a true box is *right*
when a kept box of its code has its centre inside it (exactly the metric's true
positives). Of the rest, a true box is *misread* when some other kept box has its centre
inside it, and *missed* when none has: either no detector box has its centre there (*not
detected*) or one had, and the decision dropped it as ``seg_fp`` (*dropped*). Kept boxes
left over are *extra*. The confusions (true -> read) say which characters to look at.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from kzjobs.data.books import book_id
from kzjobs.data.format import Box, code_to_char, is_code_point
from kzjobs.method.metric import inside, match_page

COUNTS = ("characters", "right", "misread", "not_detected", "dropped", "extra")


def _char(code: str) -> str:
    return code_to_char(code) if is_code_point(code) else code


def page_errors(truth: Sequence[Box], kept: pd.DataFrame,
                detected: Sequence[Box] | None) -> tuple[Counter, Counter]:
    """One page's counts (:data:`COUNTS`) and its ``(true, read)`` confusions."""
    x = (kept["x"] + kept["w"] / 2).to_numpy(float)
    y = (kept["y"] + kept["h"] / 2).to_numpy(float)
    codes = kept["code"].to_numpy(dtype=object)
    matched, unused = match_page(truth, x, y, codes)  # the metric's own matching
    counts: Counter = Counter(characters=len(truth), right=int(matched.sum()))
    confusions: Counter = Counter()
    wrong = [box for box, hit in zip(truth, matched, strict=True) if not hit]
    if detected is not None:
        dx, dy = np.array([b.center for b in detected], float).reshape(-1, 2).T
    for box in wrong:
        match = unused & inside(box, x, y)
        if match.any():
            at = int(np.argmax(match))
            unused[at] = False
            counts["misread"] += 1
            confusions[(box.code, codes[at])] += 1
        elif detected is not None and inside(box, dx, dy).any():
            counts["dropped"] += 1
        else:
            counts["not_detected"] += 1
    counts["extra"] = int(unused.sum())
    return counts, confusions


def reading_errors(truth: Mapping[str, Sequence[Box]], decided: pd.DataFrame,
                   detected: Mapping[str, Sequence[Box]] | None = None,
                   top: int = 12) -> dict[str, Any]:
    """Counts overall and per book, and the ``top`` confusions of each (with ``of``: how
    many times the true character occurs). Without ``detected`` (the detector's boxes),
    every miss counts as not detected."""
    by_page = dict(tuple(decided.groupby("image_id", sort=False)))
    empty = decided.iloc[:0]
    books: dict[str, tuple[Counter, Counter, Counter]] = {}
    for image_id, boxes in truth.items():
        page_detected = None if detected is None else detected.get(image_id, [])
        counts, confusions = page_errors(boxes, by_page.pop(image_id, empty), page_detected)
        total, confused, occurs = books.setdefault(book_id(image_id),
                                                   (Counter(), Counter(), Counter()))
        total.update(counts)
        confused.update(confusions)
        occurs.update(b.code for b in boxes)
    for image_id, kept in by_page.items():  # predicted pages without labels: all extra
        books.setdefault(book_id(image_id), (Counter(), Counter(), Counter()))[0]["extra"] += (
            len(kept))

    def summary(total: Counter, confused: Counter, occurs: Counter) -> dict[str, Any]:
        return {**{k: int(total[k]) for k in COUNTS}, "confusions": [
            {"true": _char(t), "read": _char(r), "n": n, "of": occurs[t]}
            for (t, r), n in sorted(confused.items(), key=lambda kv: (-kv[1], kv[0]))[:top]]}

    overall = [Counter(), Counter(), Counter()]
    for parts in books.values():
        for into, part in zip(overall, parts, strict=True):
            into.update(part)
    return summary(*overall) | {"by_book": {b: summary(*p) for b, p in sorted(books.items())}}


def describe(errors: dict[str, Any], shown: int = 8) -> str:
    """One line per book: ``syncxA: 1519 characters, 98 misread, 87 missed (30 not
    detected, 57 dropped), 2 extra; る->つ 17/19, ...``."""
    lines = []
    for book, e in errors["by_book"].items():
        missed = e["not_detected"] + e["dropped"]
        pairs = ", ".join(f"{c['true']}->{c['read']} {c['n']}/{c['of']}"
                          for c in e["confusions"][:shown])
        lines.append(f"{book}: {e['characters']} characters, {e['misread']} misread, {missed} "
                     f"missed ({e['not_detected']} not detected, {e['dropped']} dropped), "
                     f"{e['extra']} extra" + (f"; {pairs}" if pairs else ""))
    return "\n".join(lines)
