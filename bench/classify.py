"""Classifier quality on held-out books in UNSEEN fonts, per kind and blended, and CPU
training time.

``.venv/bin/python -m bench.classify`` writes ``bench/results/classify.json``:

1. Synthetic training books in four fonts and test books in two other fonts
   (``kzjobs.synth``; ``books.json`` says which font made each book).
2. Boxes: detector-like OOF boxes derived from the ground truth (jittered character
   boxes, boxes over the unannotated glosses, marks and seals, random boxes; labelled by
   IoU) -- see ``tests/classify/oof_boxes.py``. Pass ``--train-boxes``/``--test-boxes``
   (store keys of box files in train.csv format) to use a real detector's boxes instead.
3. For each kind of the profile and each fold: ``ClassifyTrainJob`` (which also scores
   its OOF books) and ``ClassifyPredictJob`` on the test books. (kind, fold) tasks run in
   ``--jobs`` processes, each with the profile's torch threads.
4. Competition F1 per test book (a box predicted ``seg_fp`` is dropped; point = box
   centre; misses of the boxes count): each model, each kind's folds blended, and every
   model blended (``kzjobs.method.blend``: mean logits joined on (image_id, box_id)).

Everything lives under ``--work`` (default ``var/bench/classify``); a re-run reuses
finished data, models and predictions (the jobs skip finished work).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from bench.machine import machine_info, peak_rss_mb
from kzjobs.synth.fonts import FONT_SPLIT

OUT = Path(__file__).parent / "results" / "classify.json"
# Two brushes and two print hands of the training fonts; judged on the dev fonts
# (kzjobs.synth.fonts.FONT_SPLIT), since this bench's figures choose settings.
TRAIN_FONTS = ("kouzan-sousyo", "kouzan-brush", "aoyagi-kouzan", "hanazono")
TEST_FONTS = FONT_SPLIT.dev
SEED_REFERENCE = "the seed's single models: 0.88-0.94 F1 on real books (GPU, ImageNet/WSL)"


def _task(work: str, profile: str, kind: str, fold: int, train_boxes: str,
          test_boxes: str) -> dict[str, Any]:
    """Train one (kind, fold) and predict the test books; runs in a worker process."""
    os.environ["KZ_HOME"] = str(Path(work) / "home")
    from kzjobs.classify.jobs import ClassifyPredictJob, ClassifyTrainJob
    from kzjobs.core.keys import RunKeys
    from kzjobs.core.settings import get_settings

    get_settings.cache_clear()
    prefix = RunKeys("runs/bench").classify(kind, fold)
    start = time.perf_counter()
    trained = ClassifyTrainJob(store_uri=work, profile_name=profile, dataset="train",
                               folds="train/folds.json", boxes=train_boxes, kind=kind,
                               fold=fold, out=prefix, progress=False).run()
    train_wall = time.perf_counter() - start
    start = time.perf_counter()
    predicted = ClassifyPredictJob(store_uri=work, profile_name=profile, model=trained["model"],
                                   dataset="test", boxes=test_boxes,
                                   out=f"runs/bench/test/{kind}-fold{fold}.parquet",
                                   progress=False).run()
    return {
        "kind": kind,
        "fold": fold,
        "skipped": bool(trained.get("skipped")),
        "train_seconds": trained["train_seconds"],
        "train_and_oof_wall_seconds": round(train_wall, 1),
        "test_predict_wall_seconds": round(time.perf_counter() - start, 1),
        "oof_unseen_books_seen_fonts": trained["valid"],
        "test_predictions": predicted["out"],
        "quarantined": predicted["quarantined"],
        "load_average_1_5_15_min_at_end": [round(x, 2) for x in os.getloadavg()],
    }


def _prepare(work: str, args: argparse.Namespace) -> dict[str, Any]:
    from kzjobs.core.profile import load_profile
    from kzjobs.core.store import open_store
    from kzjobs.data.dataset import Dataset
    from kzjobs.data.format import write_annotations
    from kzjobs.method.folds import FoldsJob
    from kzjobs.synth import fonts_across_folds, generate
    from tests.classify.oof_boxes import oof_like_boxes

    store = open_store(work)
    info: dict[str, Any] = {}
    for name, fonts, books, pages, seed in (
        ("train", fonts_across_folds(TRAIN_FONTS, load_profile(args.profile).data.n_folds),
         args.train_books, args.pages, args.seed),
        ("test", TEST_FONTS, args.test_books, args.test_pages, args.seed + 1),
    ):
        made = generate(store.child(name), books=books, pages_per_book=pages, seed=seed,
                        fonts=fonts)
        boxes, _ = oof_like_boxes(Dataset.open(name, store), synth_seed=seed, seed=seed)
        store.write_bytes(f"{name}/oof.csv", write_annotations(boxes))  # deterministic
        info[name] = {k: made[k] for k in ("books", "pages", "boxes", "distractors")}
    FoldsJob(store_uri=work, profile_name=args.profile, dataset="train",
             out="train/folds.json").run()
    return info


def _score(frame: Any, truth: dict, boxes: dict, ids: list[str]) -> dict[str, Any]:
    import pyarrow as pa

    from kzjobs.classify.engine import evaluate

    if not isinstance(frame, pa.Table):
        frame = pa.Table.from_pandas(frame[["image_id", "box_id", "x", "y", "w", "h", "classes"]],
                                     preserve_index=False)
    found = evaluate(frame, boxes, truth, ids)
    return {
        "f1": round(found["f1"], 4),
        "f1_by_book": {b: round(c["f1"], 4) for b, c in found["score"]["by_book"].items()},
        "precision": round(found["score"]["precision"], 4),
        "recall": round(found["score"]["recall"], 4),
        "char_accuracy": round(found["char_accuracy"], 4),
        "char_majority_accuracy": round(found["char_majority_accuracy"], 4),
        "seg_fp_recall": round(found["seg_fp_recall"], 4),
        "seg_fp_precision": round(found["seg_fp_precision"], 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="var/bench/classify")
    parser.add_argument("--profile", default="bench")
    parser.add_argument("--kinds", nargs="*", help="default: the profile's kinds")
    parser.add_argument("--train-books", type=int, default=12)
    parser.add_argument("--pages", type=int, default=6)
    parser.add_argument("--test-books", type=int, default=4)
    parser.add_argument("--test-pages", type=int, default=4)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--jobs", type=int, default=2, help="(kind, fold) tasks in parallel")
    parser.add_argument("--train-boxes", default="", help="box file key (default: GT-derived)")
    parser.add_argument("--test-boxes", default="", help="box file key (default: GT-derived)")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()

    work = str(Path(args.work).resolve())
    os.environ["KZ_HOME"] = str(Path(work) / "home")
    import mlflow

    from kzjobs.core.profile import load_profile
    from kzjobs.core.settings import get_settings
    from kzjobs.core.store import open_store
    from kzjobs.data.dataset import Dataset
    from kzjobs.data.format import BOX_CODES, read_annotations
    from kzjobs.method.blend import blend
    from kzjobs.method.predictions import read_predictions

    get_settings.cache_clear()
    profile = load_profile(args.profile)
    kinds = args.kinds or list(profile.classify.kinds)
    started = time.perf_counter()
    data_info = _prepare(work, args)
    prepare_s = time.perf_counter() - started
    # Migrate the MLflow DB and create the experiment once, before the workers share it.
    Path(work, "home").mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(get_settings().tracking_uri)
    mlflow.set_experiment("kz-classify")

    train_boxes = args.train_boxes or "train/oof.csv"
    test_boxes = args.test_boxes or "test/oof.csv"
    tasks = [(k, f) for k in kinds for f in range(profile.data.n_folds)]
    with ProcessPoolExecutor(max_workers=args.jobs, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(_task, work, args.profile, k, f, train_boxes, test_boxes)
                   for k, f in tasks]
        results = [f.result() for f in futures]

    store = open_store(work)
    test = Dataset.open("test", store)
    truth = test.annotations
    boxes = read_annotations(store.read_bytes(test_boxes), allow=BOX_CODES)
    ids = list(truth)
    frames = {(r["kind"], r["fold"]): read_predictions(store.read_bytes(r["test_predictions"]))
              for r in results}
    per_kind: dict[str, Any] = {}
    for kind in kinds:
        mine = [r for r in results if r["kind"] == kind]
        per_kind[kind] = {
            "train_seconds": round(sum(r["train_seconds"] for r in mine), 1),
            "wall_seconds": round(sum(r["train_and_oof_wall_seconds"]
                                      + r["test_predict_wall_seconds"] for r in mine), 1),
            "folds_blended_test": _score(blend([frames[kind, r["fold"]] for r in mine]),
                                         truth, boxes, ids),
            "models": [r | {"test": _score(frames[kind, r["fold"]], truth, boxes, ids)}
                       for r in mine],
        }
    everything = _score(blend(list(frames.values())), truth, boxes, ids)
    result = {
        "machine": machine_info(),
        "profile": args.profile,
        "classify_config": profile.classify.model_dump(mode="json"),
        "boxes": ("given: " + train_boxes + " / " + test_boxes) if args.train_boxes else
                 "GT-derived detector-like boxes (tests/classify/oof_boxes.py): jittered GT "
                 "boxes (2% missed) + boxes over unannotated glosses/marks/seals + 4 random "
                 "boxes per page, labelled by IoU >= 0.5; no detector was trained",
        "data": {"train_fonts": TRAIN_FONTS, "test_fonts": TEST_FONTS, "judged_on": "dev",
                 **data_info,
                 "classes": len(set(b.code for p in Dataset.open("train", store)
                                    .annotations.values() for b in p))},
        "kinds": per_kind,
        "blend_all_test": everything,
        "prepare_seconds": round(prepare_s, 1),
        "total_wall_seconds": round(time.perf_counter() - started, 1),
        "parallel_jobs": args.jobs,
        "torch_threads_per_job": profile.classify.threads or "torch default",
        "peak_rss_mb_parent": round(peak_rss_mb(), 1),
        "reference": SEED_REFERENCE,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps({k: v["folds_blended_test"]["f1"] for k, v in per_kind.items()}
                     | {"blend_all": everything["f1"]}, indent=2))


if __name__ == "__main__":
    main()
