"""Detection F1 of a trained ``bench.pretrain --detector`` model at several score thresholds.

``.venv/bin/python -m bench.thresholds --variant NAME --thresholds 0.5 0.3 0.2 0.1`` reads the
dev-font pages (fold ``JUDGED_FOLD``) once at the lowest threshold and scores the boxes at or
above each threshold. Greedy NMS keeps a box or not by the boxes scoring above it only, so
this equals reading at each threshold (while the page's detection cap is not reached).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.pretrain import DATASET, JUDGED_FOLD


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", default="var/bench/pretrain")
    parser.add_argument("--variant", required=True)
    parser.add_argument("--thresholds", type=float, nargs="+", default=[0.5, 0.3, 0.2, 0.1])
    args = parser.parse_args()
    import torch

    from kzjobs.core.checkpoint import load_from_store
    from kzjobs.core.store import open_store
    from kzjobs.data.dataset import Dataset
    from kzjobs.data.format import Point
    from kzjobs.detect.config import DetectConfig
    from kzjobs.detect.engine import detect_page
    from kzjobs.detect.jobs import fold_split
    from kzjobs.detect.model import load_detector
    from kzjobs.method.metric import score

    torch.set_num_threads(1)
    store = open_store(Path(args.work).resolve())
    checkpoint = load_from_store(store, f"runs/{args.variant}/detector/model.pt")
    config = DetectConfig.model_validate(checkpoint["config"])
    low = config.model_copy(update={"score_threshold": min(args.thresholds)})
    model, _ = load_detector(checkpoint, low)
    ds = Dataset.open(DATASET, store)
    _, dev_ids = fold_split(ds, store, f"{DATASET}/folds.json", JUDGED_FOLD)
    found = {i: detect_page(model, ds.read_image(i), low, torch.device("cpu"),
                             amp=config.amp)
             for i in dev_ids}
    truth = {i: ds.annotations[i] for i in dev_ids}
    rows = []
    for t in sorted(args.thresholds, reverse=True):
        points = {i: [Point("", d.x + d.w / 2, d.y + d.h / 2) for d in dets if d.score >= t]
                  for i, dets in found.items()}
        s = score(truth, points, ignore_code=True)
        rows.append({"variant": args.variant, "threshold": t, "f1": round(s.f1, 4),
                     "precision": round(s.precision, 4), "recall": round(s.recall, 4),
                     "f1_by_book": {b: round(c.f1, 4) for b, c in s.by_book.items()}})
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
