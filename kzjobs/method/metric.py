"""The competition F1, exactly as Kaggle's Kuzushiji Recognition scored it.

Ground-truth boxes are visited in their listed order; each takes the first unused
prediction with the same code point whose point lies strictly inside the box.
Predictions left over are false positives. TP, FP and FN are summed over all pages
before F1. ``ignore_code=True`` gives the detection-only F1.

:func:`f1_gain` says whether one reading beats another by more than the pages' noise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kzjobs.data.books import book_id
from kzjobs.data.format import Box, Point


@dataclass
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    def add(self, other: Counts) -> None:
        self.tp += other.tp
        self.fp += other.fp
        self.fn += other.fn

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        denom = 2 * self.tp + self.fp + self.fn
        # No characters and no predictions anywhere: nothing was wrong.
        return 2 * self.tp / denom if denom else 1.0

    def as_dict(self) -> dict[str, float | int]:
        # Not dataclasses.asdict: a Score's per-page counts would be copied to be dropped.
        return {"f1": self.f1, "precision": self.precision, "recall": self.recall,
                "tp": self.tp, "fp": self.fp, "fn": self.fn}


@dataclass
class Score(Counts):
    by_book: dict[str, Counts] = field(default_factory=dict)
    by_page: dict[str, Counts] = field(default_factory=dict)

    def as_dict(self, *, by_book: bool = False) -> dict:
        out: dict = {**Counts.as_dict(self)}
        if by_book:
            out["by_book"] = {b: c.as_dict() for b, c in sorted(self.by_book.items())}
        return out


def inside(box: Box, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Which points lie strictly inside ``box``."""
    x0, y0, x1, y1 = box.xyxy
    return (x > x0) & (x < x1) & (y > y0) & (y < y1)


def match_page(
    truth: Sequence[Box], x: np.ndarray, y: np.ndarray, codes: np.ndarray, *,
    ignore_code: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """The metric's matching on one page: per true box whether a prediction matched it,
    and per prediction whether it is left unused (a false positive)."""
    unused = np.ones(len(x), dtype=bool)
    matched = np.zeros(len(truth), dtype=bool)
    for i, box in enumerate(truth):
        match = unused & inside(box, x, y)
        if not ignore_code:
            match &= codes == box.code
        if match.any():
            matched[i] = True
            unused[int(np.argmax(match))] = False
    return matched, unused


def score_page(
    truth: Sequence[Box], preds: Sequence[Point], *, ignore_code: bool = False
) -> Counts:
    """TP/FP/FN of one page."""
    if not truth:
        return Counts(fp=len(preds))
    if not preds:
        return Counts(fn=len(truth))
    px = np.fromiter((p.x for p in preds), float, len(preds))
    py = np.fromiter((p.y for p in preds), float, len(preds))
    codes = np.array([p.code for p in preds])
    matched, unused = match_page(truth, px, py, codes, ignore_code=ignore_code)
    tp = int(matched.sum())
    return Counts(tp=tp, fp=int(unused.sum()), fn=len(truth) - tp)


def score(
    truth: Mapping[str, Sequence[Box]],
    preds: Mapping[str, Sequence[Point]],
    *,
    ignore_code: bool = False,
) -> Score:
    """Summed counts over all pages, per book and per page.

    A labelled page missing from ``preds`` counts all its boxes as misses; a predicted
    page that has no labels counts all its points as false positives.
    """
    total = Score()
    for image_id in list(truth) + [i for i in preds if i not in truth]:
        counts = score_page(
            truth.get(image_id, ()), preds.get(image_id, ()), ignore_code=ignore_code
        )
        total.add(counts)
        total.by_page[image_id] = counts
        total.by_book.setdefault(book_id(image_id), Counts()).add(counts)
    return total


def f1_gain(base: Mapping[str, Counts], other: Mapping[str, Counts], *, resamples: int = 1000,
            level: float = 0.9, seed: int = 0) -> dict[str, Any]:
    """``other``'s F1 minus ``base``'s over the same pages (``{page: counts}``; a page one
    of them lacks counts as empty there), with a paired bootstrap over pages: both
    readings are summed over the same ``resamples`` draws of pages, and ``interval`` holds
    the central ``level`` of the draws' gains. The ``verdict`` is "gain" or "loss" when
    the interval excludes 0, else "no measurable gain": pages differ more than that
    between two samples of the same books."""
    pages = sorted(set(base) | set(other))
    if not pages:
        raise ValueError("f1_gain needs at least one page")

    def counts(of: Mapping[str, Counts]) -> np.ndarray:
        empty = Counts()
        return np.array([[(c := of.get(p, empty)).tp, c.fp, c.fn] for p in pages], np.float64)

    def f1(summed: np.ndarray) -> np.ndarray:
        tp, fp, fn = summed[..., 0], summed[..., 1], summed[..., 2]
        denom = 2 * tp + fp + fn
        return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 1.0)

    a, b = counts(base), counts(other)
    # Each draw weighs every page by how often it was drawn: one matrix product per reading.
    weights = np.random.default_rng(seed).multinomial(
        len(pages), np.full(len(pages), 1 / len(pages)), size=resamples).astype(np.float64)
    gains = f1(weights @ b) - f1(weights @ a)
    low, high = np.quantile(gains, [(1 - level) / 2, (1 + level) / 2])
    verdict = "gain" if low > 0 else "loss" if high < 0 else "no measurable gain"
    return {"gain": round(float(f1(b.sum(0)) - f1(a.sum(0))), 4),
            "interval": [round(float(low), 4), round(float(high), 4)], "level": level,
            "resamples": resamples, "pages": len(pages), "verdict": verdict}
