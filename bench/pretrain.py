"""Does a classifier start better from ``kzjobs pretrain``'s weights? Dev F1 and CPU time.

``.venv/bin/python -m bench.pretrain --variant NAME [--set classify.epochs=6 ...]`` trains
one classifier (``--kind``; or with ``--detector`` the detector) on demo-sized books in
training fonts and judges it on books in dev fonts (:func:`prepare`), with detector-like
boxes from the ground truth (``tests/classify/oof_boxes.py``), and appends its dev F1 and
training seconds to ``--out`` (JSON lines). ``--set`` takes profile overrides, e.g.
``classify.weights={}`` (a random start; the demo profile starts resnet18 from
``kzjobs:resnet18.pt``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import yaml

from bench.machine import machine_info

SEED = 11
DATASET = "books"  # in the --work store: the books, their boxes and folds
VOCABULARY_SIZE = 200  # the demo's books use the 200 most frequent code points
PAGES_PER_BOOK = 2
TRAIN_BOOKS = 6  # 12 training pages, as a demo classifier's fold has, in 6 training fonts
DEV_BOOKS = 4  # 8 judged pages, two books in each dev font
JUDGED_FOLD = 0  # the fold whose books are judged: the dev-font books


def book_fonts() -> list[str]:
    """The font of each book :func:`prepare` makes: training fonts in turn, then the dev
    fonts in turn (``kzjobs.synth.fonts.split``); no test font."""
    from kzjobs.synth.fonts import split

    train, dev = split("train"), split("dev")
    return ([train[i % len(train)] for i in range(TRAIN_BOOKS)]
            + [dev[i % len(dev)] for i in range(DEV_BOOKS)])


def prepare(work: Path) -> dict[str, int]:
    """The books under ``DATASET`` in the ``work`` store, their detector-like boxes
    (``oof.csv``) and ``folds.json``: the dev-font books are fold ``JUDGED_FOLD``, the
    training-font books the other fold, so the model of fold ``JUDGED_FOLD`` trains on
    training fonts only and is judged on dev fonts only (as ``bench.detect`` splits).
    Returns ``{book: fold}``."""
    from kzjobs.core.store import open_store
    from kzjobs.data.dataset import Dataset
    from kzjobs.data.format import write_annotations
    from kzjobs.synth import generate
    from kzjobs.synth.fonts import split
    from tests.classify.oof_boxes import oof_like_boxes

    store = open_store(work)
    fonts = book_fonts()
    if not store.exists(f"{DATASET}/train.csv"):
        generate(store.child(DATASET), books=len(fonts), pages_per_book=PAGES_PER_BOOK,
                 seed=SEED, fonts=fonts, vocabulary_size=VOCABULARY_SIZE)
    if not store.exists(f"{DATASET}/oof.csv"):
        boxes, _ = oof_like_boxes(Dataset.open(DATASET, store), synth_seed=SEED, seed=SEED,
                                  vocabulary_size=VOCABULARY_SIZE)
        store.write_bytes(f"{DATASET}/oof.csv", write_annotations(boxes))
    dev = set(split("dev"))
    folds = {book: JUDGED_FOLD if meta["font"] in dev else 1 - JUDGED_FOLD
             for book, meta in store.read_json(f"{DATASET}/books.json").items()}
    store.write_json(f"{DATASET}/folds.json", {"n_folds": 2, "books": folds})
    return folds


def profile_with(work: Path, name: str, overrides: list[str]) -> str:
    from kzjobs.core.profile import load_profile

    body: dict[str, Any] = load_profile("demo").model_dump(mode="json", by_alias=True)
    for item in overrides:
        path, value = item.split("=", 1)
        *parents, leaf = path.split(".")
        node = body
        for part in parents:
            node = node[part]
        node[leaf] = yaml.safe_load(value)
    body["name"] = name
    out = work / f"{name}.yaml"
    out.write_text(yaml.safe_dump(body))
    return str(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", default="var/bench/pretrain")
    parser.add_argument("--variant", required=True)
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--kind", default="resnet18")
    parser.add_argument("--detector", action="store_true",
                        help="train the detector (fold 0) instead: its dev detection F1")
    parser.add_argument("--out", default="bench/results/pretrain.jsonl")
    args = parser.parse_args()
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    prepare(work)
    from kzjobs.classify.jobs import ClassifyTrainJob
    from kzjobs.detect.jobs import DetectTrainJob

    profile = profile_with(work, args.variant, args.overrides)
    start = time.perf_counter()
    where = {"store_uri": str(work), "profile_name": profile, "dataset": DATASET,
             "folds": f"{DATASET}/folds.json", "fold": JUDGED_FOLD, "progress": False}
    if args.detector:
        result = DetectTrainJob(out=f"runs/{args.variant}/detector", **where).run()
    else:
        result = ClassifyTrainJob(boxes=f"{DATASET}/oof.csv", kind=args.kind,
                                  out=f"runs/{args.variant}/{args.kind}", **where).run()
    row = {"variant": args.variant, "overrides": args.overrides,
           "job": "detector" if args.detector else args.kind,
           "dev_f1": result["valid"].get("f1"), "train_seconds": result.get("train_seconds"),
           "epochs": result.get("epochs"), "history": result.get("history"),
           "wall_seconds": round(time.perf_counter() - start, 1),
           "machine": machine_info()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    with open(args.out, "a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row, indent=1))


if __name__ == "__main__":
    main()
