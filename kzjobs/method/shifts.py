"""Per-book adaptation without labels: logit shifts of ``seg_fp`` and of each character
class, fitted so that a new book's calls match what the same models call on the books
they know (their OOF pages). Settings: :class:`kzjobs.method.config.PseudoConfig`.

Adding a constant to one class's logit moves its softmax log-odds against every other
class by that constant: a prior correction.

This module imports pandas at the top: import it inside functions from CLI code.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from kzjobs.data.format import SEG_FP
from kzjobs.method.predictions import flatten, top_two, with_top_k


def shift_seg_fp(frame: pd.DataFrame, shift: float) -> pd.DataFrame:
    """``frame`` (predictions or a blend) with each box's ``seg_fp`` logit lowered by
    ``shift``, its top-k sorted again; a box without ``seg_fp`` in its top-k is unchanged.

    Lowering one class's logit by a constant moves its softmax log-odds against every
    other class by that constant: a prior correction for books on which the classifiers
    call ``seg_fp`` more often than on those they were trained on.
    """
    return shift_classes(frame, {SEG_FP: -shift}) if shift else frame


def shift_classes(frame: pd.DataFrame, shift: Mapping[str, float]) -> pd.DataFrame:
    """``frame`` (predictions or a blend) with ``shift[c]`` added to each class ``c``'s
    logit, its top-k sorted again. Adding a constant to one class's logit moves its
    softmax log-odds against every other class by that constant: a prior correction."""
    if not shift or frame.empty:
        return frame
    row, _rank, classes, logits = flatten(frame)
    added = pd.Series(classes).map(dict(shift)).fillna(0.0).to_numpy(np.float64)
    return with_top_k(frame, row, classes, logits + added)


def shift_books(frame: pd.DataFrame, shifts: Mapping[str, Mapping[str, float]]
                ) -> pd.DataFrame:
    """``frame`` with each book's class shifts (``{book: {code: shift}}``, as
    :func:`fit_class_shift` fits them) added to the logits of its pages' boxes."""
    from kzjobs.data.books import book_id

    if not shifts or frame.empty:
        return frame
    frame = frame.reset_index(drop=True)
    books = frame["image_id"].map(book_id)
    parts = [shift_classes(part, shifts.get(book, {})) for book, part in frame.groupby(books)]
    return pd.concat(parts).sort_index()


def script_of(codes: Iterable[str]) -> np.ndarray:
    """Per code: 0 for kana (``U+3040``-``U+30FF``), 1 for any other character."""
    from kzjobs.data.format import code_to_char, is_code_point

    def kana(code: str) -> bool:
        return is_code_point(code) and 0x3040 <= ord(code_to_char(code)) <= 0x30FF

    return np.array([0 if kana(str(c)) else 1 for c in codes], dtype=np.int64)


def class_shares(blended: pd.DataFrame) -> pd.Series:
    """Each character class's share of a blend's winners within its script (``seg_fp``
    left out): how often the models call each class on the books they know (their OOF
    pages), the target of :func:`fit_class_shift`."""
    winner = top_two(blended)[0]
    counts = pd.Series(winner[winner != SEG_FP]).value_counts()
    return counts / counts.groupby(script_of(counts.index)).transform("sum").to_numpy()


def fit_class_shift(blended: pd.DataFrame, shares: pd.Series, *, max_shift: float = 3.0,
                    min_expected: float = 10.0, steps: int = 200, rate: float = 0.5
                    ) -> dict[str, float]:
    """Per-class logit shifts (at most ``max_shift`` either way) under which a blend's
    expected class counts (a softmax over each box's top-k) come to ``shares`` within
    each script: no labels needed.

    Fitted on one book, it undoes an unfamiliar hand's systematic misreadings: where
    the models read most of a book's ``せ`` as ``ぜ``, ``ぜ`` is called far more often
    than on the books they know, and its shift moves the least sure of those calls back
    to the second choice. Shares are matched within a script because books differ in
    how much kana they write far more than in which kana. A count within two Poisson
    standard deviations of its expectation is taken as chance and left as it is, and
    classes neither expected nor called ``min_expected`` times in the book are left
    alone: a rare class the hand makes the models call far more often than expected is
    pushed down like a common one (the bench's cursive hand has its る read as a small
    っ, expected a few times a book and called a hundred).
    """
    row, _rank, classes, logits = flatten(blended)
    codes, cls = np.unique(classes.astype(str), return_inverse=True)
    target = shares.reindex(codes).fillna(0.0).to_numpy()
    script = script_of(codes)
    char = codes != SEG_FP
    shift = np.zeros(len(codes))
    n = len(blended)

    def counts(shift: np.ndarray) -> np.ndarray:  # expected count of each class
        z = logits + shift[cls]
        top = np.full(n, -np.inf)
        np.maximum.at(top, row, z)
        e = np.exp(z - top[row])
        return np.bincount(cls, weights=e / np.bincount(row, weights=e, minlength=n)[row],
                           minlength=len(codes))

    # The classes to fit, chosen once; their shares are matched among themselves, so
    # the mass the book spreads over rare classes does not pull every common one up.
    got = counts(shift)
    mass = np.bincount(script[char], weights=got[char], minlength=2)
    fit = char & ((target * mass[script] >= min_expected) | (got >= min_expected))
    share = target / np.maximum(np.bincount(script[fit], weights=target[fit],
                                            minlength=2)[script], 1e-12)
    for _ in range(steps):
        got = counts(shift)
        expected = share * np.bincount(script[fit], weights=got[fit], minlength=2)[script]
        # Two Poisson standard deviations either way are chance, not the hand.
        slack = 2 * np.sqrt(expected)
        goal = np.clip(got, expected - slack, expected + slack)
        step = rate * (np.log(np.maximum(goal[fit], 0.5)) - np.log(np.maximum(got[fit], 0.5)))
        shift[fit] = np.clip(shift[fit] + step, -max_shift, max_shift)
    return {str(c): float(s) for c, s in zip(codes, shift, strict=True) if s}


def fit_book_shifts(blended: pd.DataFrame, shares: pd.Series, *, max_shift: float = 3.0,
                    min_expected: float = 10.0) -> dict[str, dict[str, float]]:
    """``{book: {code: shift}}``: :func:`fit_class_shift` on each book's boxes of a blend."""
    from kzjobs.data.books import book_id

    books = blended["image_id"].map(book_id)
    return {str(book): fit_class_shift(part.reset_index(drop=True), shares,
                                       max_shift=max_shift, min_expected=min_expected)
            for book, part in blended.groupby(books)}


def seg_fp_lead(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """``(seg_fp wins, lead)`` per box: whether ``seg_fp`` is the top class, and by how
    much it leads the best character (the shift that would make a tie; inf when
    ``seg_fp`` is the only class listed)."""
    winner, top, second = top_two(frame)
    wins = winner == SEG_FP
    return wins, np.where(wins, np.nan_to_num(top - second, nan=np.inf), 0.0)


def seg_fp_rate(blended: pd.DataFrame, within: float = np.inf) -> float:
    """The fraction of a blend's boxes that ``seg_fp`` wins, by at most ``within``."""
    wins, lead = seg_fp_lead(blended)
    return float((wins & (lead <= within)).mean()) if len(blended) else 0.0


def fit_seg_fp_shift(blended: pd.DataFrame, target_rate: float, max_shift: float) -> float:
    """The smallest shift (at most ``max_shift``) under which ``seg_fp`` wins by at most
    ``max_shift`` no more than ``target_rate`` of a blend's boxes (give or take chance).

    It needs no labels: ``target_rate`` is how often the same models make such calls on
    the books they know (``seg_fp_rate(oof_blend, within=max_shift)``). More of them on
    a new collection are taken as characters the models do not recognise in an
    unfamiliar hand. Calls won by more than ``max_shift`` are out of the shift's reach
    and out of the count: a collection with more seals or marks than the training's
    (confident ``seg_fp``) does not pull the shift up.
    """
    wins, lead = seg_fp_lead(blended)
    contested = np.sort(lead[wins & (lead <= max_shift)])[::-1]
    # Two Poisson standard deviations of slack over the expected count: a few more calls
    # than that on a small collection are chance, not an unfamiliar hand.
    expected = target_rate * len(lead)
    allowed = int(np.floor(expected + 2 * np.sqrt(expected)))
    if allowed >= len(contested):
        return 0.0
    # A tie stays with seg_fp, so the shift passes the (allowed+1)-th largest lead by a
    # hair (a thousandth of a logit, well above float32 rounding at these magnitudes).
    return min(float(contested[allowed]) + 1e-3, float(max_shift))
