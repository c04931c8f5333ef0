"""Books and folds. Models are judged on books they never saw, so folds split by book."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable

_LEADING_LETTERS = re.compile(r"^[A-Za-z]+")


def book_id(image_id: str) -> str:
    """The book of a page: the id's prefix before the first ``_`` or ``-``.

    A prefix that starts with letters keeps only its leading letters, so the
    competition's ``hnsd004-017`` belongs to book ``hnsd``.
    """
    prefix = re.split(r"[_-]", image_id, maxsplit=1)[0]
    match = _LEADING_LETTERS.match(prefix)
    return match.group(0) if match else prefix


def assign_folds(image_ids: Iterable[str], n_folds: int) -> dict[str, int]:
    """``{book: fold}``: books sorted by page count (then name), book i in fold i mod n."""
    if n_folds < 1:
        raise ValueError("n_folds must be at least 1")
    counts = Counter(book_id(i) for i in image_ids)
    ordered = sorted(counts, key=lambda b: (counts[b], b))
    return {book: i % n_folds for i, book in enumerate(ordered)}


def split_fold(
    image_ids: Iterable[str], folds: dict[str, int], fold: int
) -> tuple[list[str], list[str]]:
    """(train ids, validation ids) for ``fold``; a fold's books are its validation."""
    train, valid = [], []
    for image_id in image_ids:
        (valid if folds[book_id(image_id)] == fold else train).append(image_id)
    return train, valid
