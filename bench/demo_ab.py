"""Two ``kzjobs demo`` runs on the same held-out books: the second's F1 gain over the first.

``.venv/bin/python -m bench.demo_ab HOME_A HOME_B`` reads each run's held-out predictions
(``<KZ_HOME>/store/runs/retrain/<run>/evaluation/submission.csv``), scores both against
the first run's held-out books and prints the gain with the 90% interval of a paired
bootstrap over pages (:func:`kzjobs.method.metric.f1_gain`). The runs must have made the
same held-out books (the same ``--heldout-fonts``; the demo's seeds are fixed), which is
checked. Use it with ``--heldout-fonts dev`` to choose the demo's settings.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

HELDOUT = "datasets/heldout"


def read_run(home: Path) -> tuple[Any, dict[str, Any]]:
    """The held-out books (a Dataset) and the predictions of the demo run under ``home``."""
    from kzjobs.core.store import open_store
    from kzjobs.data.dataset import Dataset
    from kzjobs.data.format import read_submission

    store = open_store(home / "store")
    runs = [k for k in store.list("runs/retrain") if k.endswith("evaluation/submission.csv")]
    if len(runs) != 1:
        raise ValueError(f"{home}: {len(runs)} evaluated kz_retrain runs, not one: "
                         "give each demo run a fresh KZ_HOME")
    (run,) = runs
    return Dataset.open(HELDOUT, store), read_submission(store.read_bytes(run))


def compare(home_a: Path, home_b: Path) -> dict[str, Any]:
    from kzjobs.method.metric import f1_gain, score

    books_a, preds_a = read_run(home_a)
    books_b, preds_b = read_run(home_b)
    if books_a.store.read_bytes("train.csv") != books_b.store.read_bytes("train.csv"):
        raise ValueError(f"{home_a} and {home_b} hold different held-out books")
    truth = books_a.annotations
    a, b = score(truth, preds_a), score(truth, preds_b)
    return {"a": str(home_a), "b": str(home_b), "f1_a": round(a.f1, 4), "f1_b": round(b.f1, 4),
            **f1_gain(a.by_page, b.by_page)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("home_a", type=Path)
    parser.add_argument("home_b", type=Path)
    args = parser.parse_args()
    print(json.dumps(compare(args.home_a, args.home_b), indent=1))


if __name__ == "__main__":
    main()
