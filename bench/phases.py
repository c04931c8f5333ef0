"""Where training time goes: the demo profile's classifier and detector, each trained once
on ``bench.pretrain``'s books (fold 0), and the seconds of each step phase (loader wait,
forward with loss, backward, optimizer; :class:`kzjobs.core.training.Clock`) summed over
the epochs from the MLflow run.

``.venv/bin/python -m bench.phases [--set classify.threads=1 ...]`` writes
``bench/results/phases.json`` and prints a table. ``--runs-in var/bench`` trains nothing:
it reads the phases of every training run a ``bench.pipeline`` run logged under that home.
The rest of an epoch's time (``other``) is the engine's own bookkeeping: moving tensors,
the progress bar, checkpoints.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path
from typing import Any

from bench.curves import metric_by_step
from bench.machine import machine_info
from bench.pretrain import DATASET, JUDGED_FOLD, prepare, profile_with


def phase_seconds(run_id: str) -> dict[str, float]:
    """Each phase's seconds and the epochs' own, summed over the run's epochs (the last
    value of a step logged twice, as a resumed epoch is)."""
    from kzjobs.core.training import PHASES

    out = {}
    for name in [f"train_seconds_{p}" for p in PHASES] + ["epoch_seconds"]:
        by_step = metric_by_step(run_id, name)
        out[name.removeprefix("train_seconds_")] = round(sum(by_step.values()), 2)
    out["other"] = round(out["epoch_seconds"] - sum(out[p] for p in PHASES), 2)
    return out


def logged_phases(home: Path) -> dict[str, dict[str, float]]:
    """The phases of each training run (by run name) in the MLflow store under ``home``,
    with each phase's share of the epochs' time."""
    import mlflow

    from kzjobs.core.training import PHASES
    from kzjobs.release import registry

    os.environ["KZ_HOME"] = str(home)
    registry.client()  # the tracking URI of that home's settings
    rows = {}
    for run in mlflow.search_runs(search_all_experiments=True, output_format="list"):
        seconds = phase_seconds(run.info.run_id)
        if seconds["epoch_seconds"]:  # a run of the training engine
            rows[run.info.run_name] = seconds | {"share": {
                p: round(seconds[p] / seconds["epoch_seconds"], 3) for p in PHASES}}
    return dict(sorted(rows.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--work", default="var/bench/pretrain")
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--out", default="bench/results/phases.json")
    parser.add_argument("--runs-in", type=Path, metavar="HOME",
                        help="Read the training runs logged under this KZ_HOME; train none.")
    args = parser.parse_args()
    if args.runs_in:
        rows = logged_phases(args.runs_in.resolve())
        print(json.dumps(rows, indent=1))
        Path(args.out).write_text(json.dumps({"runs_in": str(args.runs_in), "jobs": rows},
                                             indent=1) + "\n")
        return
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    prepare(work)
    from kzjobs.classify.jobs import ClassifyTrainJob
    from kzjobs.detect.jobs import DetectTrainJob

    profile = profile_with(work, "phases", args.overrides)
    where = {"store_uri": str(work), "profile_name": profile, "dataset": DATASET,
             "folds": f"{DATASET}/folds.json", "fold": JUDGED_FOLD, "progress": False}
    jobs: dict[str, Any] = {
        "resnet18": lambda out: ClassifyTrainJob(boxes=f"{DATASET}/oof.csv", kind="resnet18",
                                                 out=out, **where),
        "detector": lambda out: DetectTrainJob(out=out, **where),
    }
    rows = {}
    for name, make in jobs.items():
        out = f"runs/phases/{name}"
        shutil.rmtree(work / out, ignore_errors=True)  # a fresh run, not a finished one
        load = os.getloadavg()
        result = make(out).run()
        rows[name] = {"epochs": result["epochs"], **phase_seconds(result["mlflow_run_id"]),
                      "load_average_before": [round(x, 2) for x in load]}
        print(name, json.dumps(rows[name]))
    Path(args.out).write_text(json.dumps({"overrides": args.overrides, "jobs": rows,
                                          "machine": machine_info()}, indent=1) + "\n")


if __name__ == "__main__":
    main()
