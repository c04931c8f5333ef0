"""bench.demo_ab: two demo runs' readings of the same held-out books, compared by page."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.demo_ab import HELDOUT, compare
from kzjobs.core.store import open_store
from kzjobs.data.dataset import Dataset
from kzjobs.data.format import Point, write_submission
from kzjobs.synth import generate

RUN = "runs/retrain/manual__1/evaluation/submission.csv"


def demo_home(tmp_path: Path, name: str, *, seed: int, keep: float) -> Path:
    """A KZ_HOME with held-out books and a reading that names ``keep`` of each page's
    characters right (their centres, their codes) and nothing else."""
    home = tmp_path / name
    store = open_store(home / "store")
    generate(store.child(HELDOUT), books=2, pages_per_book=2, seed=seed,
             fonts=["kouzan-sousyo"], vocabulary_size=20)
    truth = Dataset.open(HELDOUT, store).annotations
    reading = {page: [Point(b.code, b.x + b.w / 2, b.y + b.h / 2)
                      for b in boxes[: int(len(boxes) * keep)]] for page, boxes in truth.items()}
    store.write_bytes(RUN, write_submission(reading))
    return home


def test_the_better_reading_gains_and_other_books_are_refused(tmp_path: Path):
    half = demo_home(tmp_path, "half", seed=2, keep=0.5)
    whole = demo_home(tmp_path, "whole", seed=2, keep=1.0)
    out = compare(half, whole)
    assert out["f1_b"] == 1.0 and out["f1_a"] == pytest.approx(2 / 3, abs=0.05)
    assert out["gain"] > 0 and out["verdict"] == "gain" and out["pages"] == 4
    assert compare(whole, half)["verdict"] == "loss"
    other = demo_home(tmp_path, "other", seed=3, keep=1.0)
    with pytest.raises(ValueError, match="different held-out books"):
        compare(half, other)
