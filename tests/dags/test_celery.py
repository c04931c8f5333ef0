"""kz_recognize on Airflow's CeleryExecutor with two workers, one of them killed mid-shard.

A real cluster on this machine (``bench/airflow_cluster.py``): PostgreSQL metadata DB,
Redis broker, api-server, scheduler, dag-processor and two Celery workers running one
task at a time. The recognition is real (a seeded, untrained tiny blend), slow enough
per page (seconds) that a worker can be SIGKILLed while its shard is half done.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from bench.airflow_cluster import CeleryCluster, celery_cluster
from bench.workload import write_workload

pytestmark = [pytest.mark.slow, pytest.mark.timeout(480)]

DAG = "kz_recognize"
SHARDS = 3  # more shards than workers, so some wait in the queue
WORKERS = ("w1", "w2")


def states(cluster: CeleryCluster, run_id: str) -> dict[str, tuple]:
    return {f"{t['task_id']}[{t['map_index']}]": (t["state"], t["try_number"], t["hostname"])
            for t in cluster.task_instances(DAG, run_id)}


def run_killing_a_worker(cluster: CeleryCluster, shard_pages: dict[int, list[str]],
                         out: Path, ref: Path, env: dict[str, str]) -> dict[str, Any]:
    """Trigger the DAG; SIGKILL the worker of the first shard seen half done; wait for the
    run's end. What was killed, the run's id and state, and the reference's exit code."""
    # Batches of 2 pages: a shard of 3 is seen half done after its first batch.
    run_id = cluster.trigger(DAG, {"collection": "coll", "profile": "tiny", "model": "model",
                                   "shards": SHARDS, "batch": 2, "out_prefix": "predictions"})
    killed: dict[str, Any] = {"run_id": run_id}

    def kill_a_worker_mid_shard() -> None:
        if "worker" in killed:
            return
        for ti in cluster.task_instances(DAG, run_id):
            if ti["task_id"] != "recognize" or ti["state"] != "running":
                continue
            mine = shard_pages[ti["map_index"]]
            done = [p for p in mine if (out / "pages" / f"{p}.json").exists()]
            if ti["hostname"] in WORKERS and 0 < len(done) < len(mine):
                cluster.kill_worker(ti["hostname"])
                killed.update(shard=ti["map_index"], worker=ti["hostname"], done=len(done),
                              try_number=ti["try_number"])
                # The same shard by one uninterrupted process, for comparison (as the
                # DAG's, with the blend's own settings); it runs while the scheduler waits
                # out the killed task's heartbeat.
                killed["reference"] = subprocess.Popen(
                    [sys.executable, "-m", "kzjobs", "recognize", "--model", "model",
                     "--collection", "coll", "--out", str(ref),
                     "--shard", f"{ti['map_index']}/{SHARDS}", "--store", env["KZ_STORE"]],
                    env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL)
                return

    try:
        killed["state"] = cluster.wait_run(DAG, run_id, timeout=360,
                                           on_poll=kill_a_worker_mid_shard, every=0.3)
    finally:
        if proc := killed.pop("reference", None):
            killed["reference_rc"] = proc.wait(timeout=300)
    return killed


def test_a_killed_workers_shard_is_retried_on_the_other_worker(tmp_path, pg_uri):
    started = time.monotonic()
    store = tmp_path / "store"
    out = store / "predictions" / "coll"
    ref = tmp_path / "ref"
    env = {"KZ_HOME": str(tmp_path / "kz"), "KZ_STORE": str(store), "KZ_LAUNCHER": "local"}

    with ThreadPoolExecutor(1) as pool:  # the workload is made while Airflow starts
        workload = pool.submit(write_workload, store, books=3, pages_per_book=3)
        with celery_cluster(tmp_path / "airflow", pg_uri, workers=2, **env) as cluster:
            cluster.unpause(DAG)
            ids = workload.result()  # 9 pages, 3 per shard
            shard_pages = {i: ids[i::SHARDS] for i in range(SHARDS)}  # RecognizeJob's split
            killed = run_killing_a_worker(cluster, shard_pages, out, ref, env)
            run_id = killed["run_id"]
            assert "worker" in killed, f"no shard was caught half done: {states(cluster, run_id)}"
            assert killed["state"] == "success", states(cluster, run_id)

            shard = killed["shard"]
            survivor = next(w for w in WORKERS if w != killed["worker"])
            tries = sorted(cluster.tries(DAG, run_id, "recognize", shard),
                           key=lambda t: t["try_number"])
            assert killed["try_number"] == 1 and tries[0]["hostname"] == killed["worker"]
            assert tries[0]["state"] != "success"  # the killed try never reported back
            assert tries[-1]["try_number"] > 1
            assert (tries[-1]["state"], tries[-1]["hostname"]) == ("success", survivor)
            # The retry resumed: it read only the pages the killed try had not finished.
            summary = cluster.xcom(DAG, run_id, "recognize", shard)
            assert summary["pages"] == len(shard_pages[shard])
            assert summary["already_done"] >= killed["done"] >= 1
            assert summary["recognized"] == summary["pages"] - summary["already_done"]

    # Every page exactly once, in the per-page results and the merged submission.
    assert sorted(p.stem for p in (out / "pages").glob("*.json")) == ids
    with open(out / "submission.csv", newline="") as fh:
        seen = Counter(row["image_id"] for row in csv.DictReader(fh))
    assert seen == Counter(ids)

    # The interrupted shard's pages are byte for byte those of the uninterrupted process.
    assert killed["reference_rc"] == 0
    for page in shard_pages[shard]:
        for part, ext in (("pages", "json"), ("transcripts", "txt")):
            got = (out / part / f"{page}.{ext}").read_bytes()
            assert got == (ref / part / f"{page}.{ext}").read_bytes(), (part, page)
    print(f"celery test: {time.monotonic() - started:.0f} s; killed {killed}")
