"""Dev F1 of ``bench.pretrain`` classifiers alone and blended (``kzjobs.method.blend.blend``).

``.venv/bin/python -m bench.blend_dev runs/A/resnet18 runs/B/resnet34 ...`` reads each run's
``oof.parquet`` (fold ``JUDGED_FOLD``: the dev-font books) in the ``--work`` store and prints
the dev F1 of each and of the blend of all, scored as the classifier job scores itself.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("runs", nargs="+", help="store prefixes of the classifier runs")
    parser.add_argument("--work", default="var/bench/pretrain")
    args = parser.parse_args()
    import pyarrow as pa

    from bench.pretrain import DATASET, JUDGED_FOLD
    from kzjobs.classify.engine import evaluate
    from kzjobs.core.store import open_store
    from kzjobs.data.books import split_fold
    from kzjobs.data.dataset import Dataset
    from kzjobs.data.format import BOX_CODES, read_annotations
    from kzjobs.method.blend import blend
    from kzjobs.method.folds import load_folds
    from kzjobs.method.predictions import read_predictions

    store = open_store(Path(args.work).resolve())
    truth = Dataset.open(DATASET, store).annotations
    boxes = read_annotations(store.read_bytes(f"{DATASET}/oof.csv"), allow=BOX_CODES)
    _, judged = split_fold(list(truth), load_folds(store, f"{DATASET}/folds.json"), JUDGED_FOLD)

    def f1(frame: object) -> float:
        if not isinstance(frame, pa.Table):
            frame = pa.Table.from_pandas(
                frame[["image_id", "box_id", "x", "y", "w", "h", "classes"]],
                preserve_index=False)
        return round(evaluate(frame, boxes, truth, judged)["f1"], 4)

    frames = [read_predictions(store.read_bytes(f"{run}/oof.parquet"), name=run)
              for run in args.runs]
    row = {run: f1(frame) for run, frame in zip(args.runs, frames, strict=True)}
    row["blend"] = f1(blend(frames))
    print(json.dumps(row))


if __name__ == "__main__":
    main()
