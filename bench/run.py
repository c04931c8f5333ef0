"""``make bench``: every benchmark in its own process, then the record in RESULTS.md.

``python -m bench.run [--profile bench] [--parts pipeline synth ...]``
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from bench.pipeline import bench_plan
from bench.report import record

PARTS = {
    "synth": ["-m", "bench.synth_speed"],
    "validate": ["-m", "bench.validate"],
    "detect": ["-m", "bench.detect", "--profiles", "bench", "demo"],
    "networks": ["-m", "bench.networks"],  # minutes, no training: the networks' cost a page
    "pipeline": ["-m", "bench.pipeline"],
    "inference": ["-m", "bench.inference"],  # reads the blend bench.pipeline trained
    "scale": ["-m", "bench.scale"],
    # recognize with a seeded blend at 400, 2,312 and 5,001 classes: pages/s and peak memory
    "classes": ["-m", "bench.classes"],
    "review": ["-m", "bench.review"],  # the review page of 1,200 characters in Chromium
    "formats": ["-m", "bench.formats"],  # PDF/JPEG pages in, each library format out
    # needs PostgreSQL and Redis on localhost (a real Airflow cluster): ask for it by name
    "celery": ["-m", "bench.celery"],
}
DEFAULT = ["synth", "validate", "detect", "networks", "pipeline", "inference", "scale",
           "classes", "review", "formats"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--profile", default="bench")
    parser.add_argument("--parts", nargs="+", default=DEFAULT, choices=list(PARTS))
    args = parser.parse_args()
    for part in args.parts:
        argv = [sys.executable, *PARTS[part]]
        if part in ("pipeline", "networks", "classes"):
            argv += ["--profile", args.profile]
        if part == "inference":  # the run bench.pipeline trained
            argv += ["--run", bench_plan(args.profile).run]
        print(f"== bench {part}: {' '.join(argv[1:])}", flush=True)
        subprocess.run(argv, check=True)
    record(args.parts)
    print("recorded in bench/RESULTS.md")


if __name__ == "__main__":
    main()
