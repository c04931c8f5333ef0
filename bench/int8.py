"""Trained classifiers read with an int8 trunk (``kzjobs.classify.quantize``) against
fp32 as loaded for inference: competition F1 on books in unseen fonts, how often the two
agree on a box's class, and seconds a page on one torch thread (as each of
``kzjobs recognize``'s page workers reads).

``python -m bench.int8 --work var/bench/classify`` takes the models and data that
``bench.classify --work`` left there (one classifier per (kind, fold), its training
books and its test books in fonts no training saw) and writes ``bench/results/int8.json``.
Each int8 trunk is calibrated on ``--calibration`` of its own training pages.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from bench.machine import machine_info

OUT = Path(__file__).parent / "results" / "int8.json"


def read_pages(model: Any, dataset: Any, boxes: dict, cfg: Any, vocab: list[str], *,
               kind: str, fold: int, pages: int | None = None) -> tuple[Any, Any, float]:
    """The pages of ``dataset`` (the first ``pages``, default all) read by ``model``: its
    predictions table, the logits of every box, and the seconds a page."""
    import numpy as np
    import pyarrow as pa
    import torch

    from kzjobs.classify.predict import page_table, predict_logits

    tables, logits, seconds = [], [], 0.0
    for image_id in dataset.image_ids()[:pages]:
        image = np.asarray(dataset.read_image(image_id))
        started = time.perf_counter()
        page = predict_logits(model, image, boxes[image_id], cfg, device=torch.device("cpu"))
        seconds += time.perf_counter() - started
        logits.append(page)
        tables.append(page_table(image_id, boxes[image_id], page, vocab, top_k=cfg.top_k,
                                 kind=kind, fold=fold))
    return pa.concat_tables(tables), torch.cat(logits), seconds / len(tables)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default="var/bench/classify")
    parser.add_argument("--profile", default="bench")
    parser.add_argument("--calibration", type=int, default=8, help="training pages")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    from kzjobs.classify.engine import evaluate
    from kzjobs.classify.model import build_model, load_model
    from kzjobs.classify.quantize import calibration_pages, quantize_classifier
    from kzjobs.core.checkpoint import load_checkpoint
    from kzjobs.core.device import torch_threads
    from kzjobs.core.keys import RunKeys
    from kzjobs.core.profile import load_profile
    from kzjobs.core.store import open_store
    from kzjobs.data.dataset import Dataset
    from kzjobs.data.format import BOX_CODES, read_annotations

    profile = load_profile(args.profile)
    cfg = profile.classify
    store = open_store(str(Path(args.work).resolve()))
    train, test = Dataset.open("train", store), Dataset.open("test", store)
    train_boxes = read_annotations(store.read_bytes("train/oof.csv"), allow=BOX_CODES)
    test_boxes = read_annotations(store.read_bytes("test/oof.csv"), allow=BOX_CODES)
    calibration = list(calibration_pages(train, cfg, args.calibration, boxes=train_boxes))
    models = []
    for kind in cfg.kinds:
        for fold in range(profile.data.n_folds):
            checkpoint = load_checkpoint(
                store.read_bytes(RunKeys("runs/bench").classifier(kind, fold)))
            fp32, vocab = load_model(checkpoint)
            trained = build_model(checkpoint["model_args"])
            trained.load_state_dict(checkpoint["model"])
            int8 = quantize_classifier(trained, calibration)
            row: dict[str, Any] = {"kind": kind, "fold": fold}
            variants = {"fp32": fp32, "int8 trunk": int8}
            top1 = {}
            with torch_threads(1):
                for model in variants.values():  # warm-up: oneDNN and fbgemm pick kernels
                    read_pages(model, test, test_boxes, cfg, vocab, kind=kind, fold=fold,
                               pages=1)
                for name, model in variants.items():
                    table, logits, seconds = read_pages(model, test, test_boxes, cfg, vocab,
                                                        kind=kind, fold=fold)
                    found = evaluate(table, test_boxes, test.annotations, test.image_ids())
                    row[name] = {"f1": round(found["f1"], 4),
                                 "char_accuracy": round(found["char_accuracy"], 4),
                                 "seconds_per_page": round(seconds, 3)}
                    top1[name] = logits.argmax(1)
            fp32_top1, int8_top1 = top1.values()
            row["top1_agreement"] = round((fp32_top1 == int8_top1).float().mean().item(), 4)
            row["boxes"] = len(fp32_top1)
            models.append(row)
            print(json.dumps(row))
    result = {
        "machine": machine_info(),
        "profile": args.profile,
        "work": args.work,
        "test_pages": len(test.image_ids()),
        "calibration_pages": args.calibration,
        "torch_threads": 1,
        "models": models,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
