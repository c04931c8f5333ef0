"""Learning curves: the demo profile's classifier's dev F1 against its training seconds,
from a random start and from the shipped pretrained weights (issue 45).

``.venv/bin/python -m bench.curves [--set classify.threads=1] [--eval-every 1]
[--seeds 0 1 2]`` trains each start (``VARIANTS``) once per seed (``classify.seed``) on
``bench.pretrain``'s books (training fonts) and judges it on that bench's dev-font books
every ``--eval-every`` epochs (the classifier's ``eval_every``) and after the last epoch.
Each point is (training seconds so far, dev F1): the seconds are the Trainer's
``epoch_seconds`` (wall time of the training epochs, the evaluations left out) from the
MLflow run, summed. A start's curve is the mean over its seeds at each evaluated epoch. A
(start, seed) already in ``--out`` is not trained again unless its start is named in
``--rerun``. Writes ``bench/results/learning-curve.json`` and draws
``learning-curve.png`` beside it (``bench.figures``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.figures import learning_curve_figure, save_figure
from bench.machine import machine_info
from bench.pretrain import (
    DATASET,
    DEV_BOOKS,
    JUDGED_FOLD,
    PAGES_PER_BOOK,
    SEED,
    TRAIN_BOOKS,
    VOCABULARY_SIZE,
    book_fonts,
    prepare,
    profile_with,
)

OUT = Path(__file__).parent / "results" / "learning-curve.json"
KIND = "resnet18"
VARIANTS: dict[str, list[str]] = {
    "scratch": ["classify.weights={}"],
    "pretrained": ['classify.weights={"resnet18": "kzjobs:resnet18.pt"}'],
}


def curve_points(history: Sequence[Mapping[str, float]], epoch_seconds: Mapping[int, float],
                 final_f1: float, epochs: int) -> list[dict[str, Any]]:
    """(epoch, training seconds so far, dev F1) at each evaluated epoch of ``history`` and
    after the last (whose F1 is the job's final one: the ``eval_every`` hook leaves the
    last epoch to the final prediction). ``epoch_seconds``: epoch index -> seconds."""
    points = []
    total = 0.0
    evaluated = {int(h["epoch"]): h["valid_f1"] for h in history if "valid_f1" in h}
    for index in range(epochs):
        total += epoch_seconds[index]
        f1 = final_f1 if index == epochs - 1 else evaluated.get(index)
        if f1 is not None:
            points.append({"epoch": index + 1, "train_seconds": round(total, 1),
                           "dev_f1": round(float(f1), 4)})
    return points


def seconds_to_reach(points: Sequence[Mapping[str, Any]], f1: float) -> float | None:
    """Training seconds of the first point at or above ``f1`` (None: never reached)."""
    return next((p["train_seconds"] for p in points if p["dev_f1"] >= f1), None)


def mean_points(curves: Sequence[Sequence[Mapping[str, Any]]]) -> list[dict[str, Any]]:
    """The mean of several seeds' curves at each epoch they all evaluated, with the
    lowest and highest dev F1 among them."""
    common = set.intersection(*({p["epoch"] for p in c} for c in curves))
    out = []
    for epoch in sorted(common):
        at = [next(p for p in c if p["epoch"] == epoch) for c in curves]
        f1 = [p["dev_f1"] for p in at]
        out.append({"epoch": epoch,
                    "train_seconds": round(sum(p["train_seconds"] for p in at) / len(at), 1),
                    "dev_f1": round(sum(f1) / len(f1), 4),
                    "dev_f1_range": [min(f1), max(f1)]})
    return out


def variants_of(runs: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """``{start: {"points": mean curve, "seeds": {seed: curve}}}`` from the runs, keyed
    ``<start>/seed<N>``."""
    out: dict[str, dict[str, Any]] = {}
    for key, run in sorted(runs.items()):
        start = key.split("/", 1)[0]
        out.setdefault(start, {"seeds": {}})["seeds"][run["seed"]] = run["points"]
    for start in out:
        out[start]["points"] = mean_points(list(out[start]["seeds"].values()))
    return out


def summary(variants: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """The issue's question: the seconds each start needs to reach the dev F1 the random
    start reaches after its last epoch (on the mean curves)."""
    if "scratch" not in variants:
        return {}
    target = variants["scratch"]["points"][-1]["dev_f1"]
    reach = {name: seconds_to_reach(v["points"], target) for name, v in variants.items()}
    out: dict[str, Any] = {"target_dev_f1": target, "seconds_to_reach": reach}
    if reach.get("pretrained") is not None and reach["scratch"]:
        out["pretrained_share_of_scratch_seconds"] = round(reach["pretrained"] / reach["scratch"],
                                                           3)
    return out


def metric_by_step(run_id: str, name: str) -> dict[int, float]:
    """A metric of an MLflow run, by step (the last value of a step logged twice, as a
    resumed epoch is)."""
    from kzjobs.release import registry

    found = registry.client().get_metric_history(run_id, name)
    return {m.step: m.value for m in sorted(found, key=lambda m: m.timestamp)}


def run_variant(work: Path, name: str, seed: int, overrides: list[str]) -> dict[str, Any]:
    from kzjobs.classify.jobs import ClassifyTrainJob

    label = f"curve-{name}-seed{seed}"
    shutil.rmtree(work / "runs" / label, ignore_errors=True)  # a fresh run
    overrides = [*overrides, f"classify.seed={seed}"]
    profile = profile_with(work, label, overrides)
    load_before = os.getloadavg()
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    result = ClassifyTrainJob(store_uri=str(work), profile_name=profile, dataset=DATASET,
                              folds=f"{DATASET}/folds.json", fold=JUDGED_FOLD,
                              boxes=f"{DATASET}/oof.csv", kind=KIND,
                              out=f"runs/{label}/{KIND}", progress=False).run()
    wall = time.perf_counter() - start
    used = resource.getrusage(resource.RUSAGE_SELF)
    seconds = metric_by_step(result["mlflow_run_id"], "epoch_seconds")
    return {
        "seed": seed,
        "overrides": overrides,
        "points": curve_points(result["history"], seconds, result["valid"]["f1"],
                               result["epochs"]),
        "dev_f1": round(result["valid"]["f1"], 4),
        "train_seconds": result["train_seconds"],
        "epochs": result["epochs"],
        "train_pages": result["train_pages"],
        "dev_pages": result["valid_pages"],
        "classes": result["classes"],
        "history": result["history"],
        # The whole job (evaluations, final prediction, loading) in this process:
        "job_wall_seconds": round(wall, 1),
        "job_process_cpu_seconds": round(used.ru_utime + used.ru_stime
                                         - cpu.ru_utime - cpu.ru_stime, 1),
        "load_average_1_5_15_min": {"before": [round(x, 2) for x in load_before],
                                    "after": [round(x, 2) for x in os.getloadavg()]},
        "mlflow_run_id": result["mlflow_run_id"],
        "machine": machine_info(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="var/bench/pretrain")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--rerun", nargs="*", default=[], choices=list(VARIANTS),
                        help="train these starts again though --out has them")
    parser.add_argument("--epochs", type=int, default=0, help="0: the demo profile's")
    parser.add_argument("--eval-every", type=int, default=1)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="classify.seed of each run of a start")
    parser.add_argument("--set", action="append", default=[], dest="overrides",
                        help="more profile overrides for every start, e.g. classify.threads=1")
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    os.environ["KZ_HOME"] = str(work / "home")  # this bench's own MLflow database
    from kzjobs.core.settings import get_settings

    get_settings.cache_clear()
    out = Path(args.out)
    record: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    runs: dict[str, Any] = record.get("runs", {})
    prepare(work)
    common = [f"classify.eval_every={args.eval_every}", *args.overrides]
    if args.epochs:
        common.append(f"classify.epochs={args.epochs}")
    for seed in args.seeds:  # the starts side by side, so that both see the same load
        for name in args.variants:
            key = f"{name}/seed{seed}"
            if key in runs and name not in args.rerun:
                print(f"== {key}: in {out}, not trained again (--rerun {name})",
                      file=sys.stderr)
                continue
            print(f"== {key}: training", file=sys.stderr, flush=True)
            runs[key] = run_variant(work, name, seed, VARIANTS[name] + common)
            variants = variants_of(runs)
            record = {
                "command": "python -m bench.curves " + " ".join(sys.argv[1:]),
                "machine": machine_info(),
                "data": {"set": "dev books (dev fonts)", "dataset": DATASET, "seed": SEED,
                         "fonts": book_fonts(), "train_books": TRAIN_BOOKS,
                         "dev_books": DEV_BOOKS, "pages_per_book": PAGES_PER_BOOK,
                         "vocabulary_size": VOCABULARY_SIZE},
                "x": "training seconds: the Trainer's epoch_seconds summed (wall time of the "
                     "training epochs, evaluations left out)",
                "kind": KIND,
                "summary": summary(variants),
                "variants": variants,
                "runs": runs,
            }
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(record, indent=1) + "\n")
    if runs:
        png = out.with_suffix(".png")
        save_figure(learning_curve_figure(record["variants"], record["summary"].get(
            "target_dev_f1")), png)
        print(json.dumps({"summary": record["summary"], "png": str(png)}, indent=1))


if __name__ == "__main__":
    main()
