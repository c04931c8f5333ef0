"""Recognition at scale: pages/s and peak memory of one ``kzjobs recognize`` process as the
collection grows (default 10, 100 and 500 pages). Memory should stay flat: pages stream.

``python -m bench.scale [--pages 10 100 500] [--model KEY --store URI --source KEY]``
writes ``bench/results/scale.json``. With no ``--model``, the workload is a seeded,
untrained tiny blend (``bench/workload.py``) on synthetic pages: every stage of
recognition runs (detector, classifier, outputs, review page), with fixed cost per page.
``--model`` measures a trained bundle instead, on copies of ``--source``'s pages.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.machine import wait_child

RESULTS = Path(__file__).parent / "results"


def recognize_speed(store_uri: str, model: str, source: str, pages: int,
                    env: dict[str, str], profile: str | None = None,
                    shards: int = 1, workers: int = 0) -> dict[str, Any]:
    """``kzjobs recognize`` on ``pages`` pages (``source``'s, repeated), in fresh processes,
    so that each peak RSS is its own.

    With ``shards`` > 1 the shards run side by side (as the bulk DAG maps them), the cores
    shared out between them, then ``kzjobs recognize merge``; the wall time covers all.
    ``workers``: pages read side by side in each process (0: recognize's default).
    """
    from concurrent.futures import ThreadPoolExecutor

    from kzjobs.core.store import open_store

    store = open_store(store_uri)
    src = sorted(store.list(f"{source}/images"))
    sub = f"bench-speed/p{pages}"
    for i in range(pages):
        key = src[i % len(src)]
        name = f"{sub}/images/spd{i:04d}_{key.rsplit('/', 1)[-1]}"
        if not store.exists(name):
            store.write_bytes(name, store.read_bytes(key))
    out = f"bench-speed/out{pages}-s{shards}-{int(time.time())}"
    kzjobs = [sys.executable, "-m", "kzjobs", "recognize"]
    where = ["--collection", sub, "--out", out, "--store", store_uri]
    argv = [*kzjobs, "--model", model, *where, *(["--profile", profile] if profile else []),
            *(["--workers", str(workers)] if workers else [])]
    threads = str(max(1, (os.cpu_count() or 1) // shards))
    shard_env = env if shards == 1 else env | {"OMP_NUM_THREADS": threads,
                                                "MKL_NUM_THREADS": threads}
    started = time.perf_counter()
    with ThreadPoolExecutor(shards) as pool:  # a thread per child: each one's VmHWM is read
        runs = list(pool.map(lambda i: _run([*argv, "--shard", f"{i}/{shards}"], shard_env),
                             range(shards)))
    merged = runs[0][0]["merge"] if shards == 1 else _run([*kzjobs, "merge", *where], env)[0]
    wall = time.perf_counter() - started
    job_rates = [summary.get("pages_per_second") or 0.0 for summary, _ in runs]
    return {"pages": pages, "shards": shards, "workers": runs[0][0].get("workers"),
            "recognized": merged["recognized"], "characters": merged.get("characters"),
            "wall_seconds": round(wall, 1),
            "pages_per_second_job": round(sum(job_rates), 3),
            "pages_per_second_wall": round(pages / wall, 3),
            "peak_rss_mb": round(max(peak for _, peak in runs) / 1024, 1)}


def _run(argv: list[str], env: dict[str, str]) -> tuple[dict[str, Any], int]:
    """A ``kzjobs`` command's JSON summary and its own peak RSS in KiB."""
    with tempfile.TemporaryFile("w+") as stdout, tempfile.TemporaryFile("w+") as stderr:
        proc = subprocess.Popen(argv, env=env, stdout=stdout, stderr=stderr, text=True)
        code, _, peak_kb = wait_child(proc)  # this one process's peak, not its parent's
        stdout.seek(0)
        stderr.seek(0)
        if code:
            raise RuntimeError(stderr.read()[-3000:])
        return json.loads(stdout.read()), peak_kb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, nargs="+", default=[10, 100, 500])
    parser.add_argument("--model", help="A bundle key in --store (default: a seeded tiny blend).")
    parser.add_argument("--store", help="The store holding --model and --source.")
    parser.add_argument("--source", default="coll", help="Collection whose pages are copied.")
    parser.add_argument("--profile", help="Inference settings (default: the bundle's own).")
    parser.add_argument("--shards", type=int, default=1,
                        help="Recognize shards run side by side, the cores shared out.")
    parser.add_argument("--workers", type=int, default=0,
                        help="Pages read side by side in each process (0: recognize's default).")
    parser.add_argument("--threads", type=int, default=0,
                        help="OMP_NUM_THREADS for the job (0: torch's default, every core).")
    parser.add_argument("--out", type=Path, default=RESULTS / "scale.json")
    args = parser.parse_args()
    if bool(args.model) != bool(args.store):
        parser.error("--model and --store go together")

    from bench.machine import machine_info
    from bench.workload import write_workload

    with tempfile.TemporaryDirectory(prefix="kz-bench-scale-") as tmp:
        env = {**os.environ, "KZ_HOME": str(Path(tmp) / "kz"), "GX_ANALYTICS_ENABLED": "false"}
        if args.threads:
            env |= {"OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads)}
        store, model, workload = args.store, args.model, "trained bundle"
        if not model:
            store, model = str(Path(tmp) / "store"), "model"
            write_workload(store, books=2, pages_per_book=5, collection=args.source)
            workload = "seeded untrained tiny blend (bench/workload.py), synthetic pages"
        runs = []
        for n in args.pages:
            print(f"recognize {n} pages", flush=True)
            runs.append(recognize_speed(store, model, args.source, n, env, args.profile,
                                        args.shards, args.workers))
            print(json.dumps(runs[-1]), flush=True)
    result = {
        "command": "python -m bench.scale " + " ".join(sys.argv[1:]),
        "workload": workload, "model": args.model or "seeded", "profile": args.profile,
        "runs": runs,
        "peak_rss_growth_mb": round(runs[-1]["peak_rss_mb"] - runs[0]["peak_rss_mb"], 1),
        "machine": machine_info(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
