"""The speed-up of ``kz_recognize`` from 1 to 2 Celery workers on this machine.

``python -m bench.celery [--books 4 --pages-per-book 10 --shards 4]`` writes
``bench/results/celery.json``. One cluster (``bench/airflow_cluster.py``: PostgreSQL,
Redis, api-server, scheduler, dag-processor) reads the same collection with a seeded
tiny blend twice, after an untimed warm-up run: with worker ``w1`` alone, then with
``w2`` added. Each run writes to its own prefix, so the second cannot resume from the
first. Reported: the DAG run's wall time (trigger to end, planning, validation and merge
included) and the span of its recognition shards, with the speed-ups of both. Each
worker runs one task at a time and the tiny profile one thread per job, so two workers
want two free cores; the load average is recorded beside the figures because the
machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.airflow_cluster import CeleryCluster, celery_cluster, temporary_database
from bench.workload import write_workload

RESULTS = Path(__file__).parent / "results"
DAG = "kz_recognize"


def _when(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def timed_run(cluster: CeleryCluster, *, shards: int, out_prefix: str, timeout: float,
              collection: str = "coll") -> dict[str, Any]:
    """One kz_recognize run over a collection: its wall time and its shards' span."""
    load = os.getloadavg()[0]
    started = time.monotonic()
    run_id = cluster.trigger(DAG, {"collection": collection, "profile": "tiny",
                                   "model": "model", "shards": shards,
                                   "out_prefix": out_prefix})
    state = cluster.wait_run(DAG, run_id, timeout=timeout, every=1.0)
    wall = time.monotonic() - started
    if state != "success":
        raise RuntimeError(f"{DAG} {run_id} ended {state}; see {cluster.home}")
    tis = [t for t in cluster.task_instances(DAG, run_id) if t["task_id"] == "recognize"]
    span = max(_when(t["end_date"]) for t in tis) - min(_when(t["start_date"]) for t in tis)
    return {
        "run_id": run_id,
        "wall_seconds": round(wall, 1),
        "recognize_span_seconds": round(span, 1),
        "shard_seconds": sorted(round(t["duration"], 1) for t in tis),
        "shards_by_worker": {w: sum(t["hostname"] == w for t in tis)
                             for w in sorted({t["hostname"] for t in tis})},
        "load_average_before": round(load, 2),
        "load_average_after": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--books", type=int, default=4)
    parser.add_argument("--pages-per-book", type=int, default=10)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--timeout", type=float, default=1800, help="Per run, in seconds.")
    parser.add_argument("--out", type=Path, default=RESULTS / "celery.json")
    args = parser.parse_args()

    from bench.machine import machine_info
    from kzjobs.core.store import open_store
    from kzjobs.synth import generate

    with tempfile.TemporaryDirectory(prefix="kz-bench-celery-") as tmp, \
            temporary_database() as db:
        root = Path(tmp)
        store = root / "store"
        ids = write_workload(store, books=args.books, pages_per_book=args.pages_per_book)
        generate(open_store(store).child("warm"), books=1, pages_per_book=1, seed=4,
                 fonts=["ipaex-mincho"], labelled=False)
        env = {"KZ_HOME": str(root / "kz"), "KZ_STORE": str(store), "KZ_LAUNCHER": "local"}
        runs: dict[str, Any] = {}
        with celery_cluster(root / "airflow", db, workers=1, **env) as cluster:
            cluster.unpause(DAG)
            cluster.wait_worker_ready("w1")
            # Not timed: the first tasks on a fresh cluster pay for cold caches (~20 s here),
            # which would otherwise count against the 1-worker run only.
            print("warm-up run, 1 page", flush=True)
            timed_run(cluster, shards=1, out_prefix="warm", timeout=args.timeout,
                      collection="warm")
            print(f"1 worker, {len(ids)} pages in {args.shards} shards", flush=True)
            runs["1"] = timed_run(cluster, shards=args.shards, out_prefix="one",
                                  timeout=args.timeout)
            cluster.start_worker("w2")
            cluster.wait_worker_ready("w2")
            print("2 workers", flush=True)
            runs["2"] = timed_run(cluster, shards=args.shards, out_prefix="two",
                                  timeout=args.timeout)
        same = (store / "one/coll/submission.csv").read_bytes() == \
            (store / "two/coll/submission.csv").read_bytes()

    one, two = runs["1"], runs["2"]
    result = {
        "command": "python -m bench.celery " + " ".join(
            f"--{k.replace('_', '-')} {getattr(args, k)}"
            for k in ("books", "pages_per_book", "shards")),
        "pages": len(ids),
        "shards": args.shards,
        "profile": "tiny (seeded, untrained blend; one thread per job)",
        "runs_by_workers": runs,
        "speedup_wall": round(one["wall_seconds"] / two["wall_seconds"], 2),
        "speedup_recognize": round(one["recognize_span_seconds"]
                                   / two["recognize_span_seconds"], 2),
        "same_submission": same,
        "machine": machine_info(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("pages", "speedup_wall", "speedup_recognize",
                                             "same_submission")}))
    if not same:
        raise SystemExit("the two runs' submissions differ")


if __name__ == "__main__":
    main()
