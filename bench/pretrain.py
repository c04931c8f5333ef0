"""Does a classifier start better from ``kzjobs pretrain``'s weights? Dev F1 and CPU time.

``.venv/bin/python -m bench.pretrain --variant NAME [--set classify.epochs=6 ...]`` trains
one classifier (``--kind``, fold 0; or with ``--detector`` the detector) on demo-like
dev books (6 books of 4 pages, the 200 most frequent code points, seed 11: not the
demo's books) with
detector-like boxes from the ground truth (``tests/classify/oof_boxes.py``), and appends
its out-of-fold (dev) F1 and training seconds to ``--out`` (JSON lines). ``--set`` takes
profile overrides, e.g. ``classify.weights={"resnet18": "kzjobs:resnet18.pt"}``.
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


def prepare(work: Path) -> None:
    from kzjobs.core.store import open_store
    from kzjobs.data.dataset import Dataset
    from kzjobs.data.format import write_annotations
    from kzjobs.method.folds import FoldsJob
    from kzjobs.synth import generate
    from tests.classify.oof_boxes import oof_like_boxes

    store = open_store(work)
    if not store.exists("dev/train.csv"):
        generate(store.child("dev"), books=6, pages_per_book=4, seed=SEED,
                 vocabulary_size=200)
    if not store.exists("dev/oof.csv"):
        boxes, _ = oof_like_boxes(Dataset.open("dev", store), synth_seed=SEED, seed=SEED,
                                  vocabulary_size=200)
        store.write_bytes("dev/oof.csv", write_annotations(boxes))
    if not store.exists("dev/folds.json"):
        FoldsJob(store_uri=str(work), profile_name="demo", dataset="dev",
                 out="dev/folds.json").run()


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
    where = {"store_uri": str(work), "profile_name": profile, "dataset": "dev",
             "folds": "dev/folds.json", "fold": 0, "progress": False}
    if args.detector:
        result = DetectTrainJob(out=f"runs/{args.variant}/detector", **where).run()
    else:
        result = ClassifyTrainJob(boxes="dev/oof.csv", kind=args.kind,
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
