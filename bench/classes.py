"""Recognition at thousands of classes: pages/s and peak memory of one ``kzjobs recognize``
process, end to end (model load included), as the class count grows.

``python -m bench.classes [--classes 400 2312 5001] [--pages 10 100] [--flatness 500]
[--profile bench]`` writes ``bench/results/classes.json``. Per class count, a seeded,
untrained blend (``bench/workload.py``: a detector, one classifier with that many
classes, and a level 2 fitted on simulated outputs over the same classes) reads copies
of synthetic pages in a fresh process (``bench.scale.recognize_speed``). The weights are
random, so F1 means nothing here; time and memory are the networks', level 2's and the
outputs' at that size. 2,312 classes are kana + Jōyō; 5,001 are more than the real
data's 4,212 + ``seg_fp``. ``--flatness`` reads more pages at the largest class count:
memory should stay flat as pages stream.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.machine import machine_info
from bench.scale import RESULTS, recognize_speed


def bundle_figures(store_root: str) -> dict[str, Any]:
    """What grows with the class count in a bundle: the classifier head, the files."""
    from kzjobs.core.checkpoint import load_checkpoint
    from kzjobs.core.store import open_store
    from kzjobs.release.bundle import Bundle

    root = open_store(store_root).child("model")
    bundle = Bundle.load(root)
    ckpt = load_checkpoint(root.read_bytes(next(iter(bundle.classifiers.values()))[0]))
    head = [v for k, v in ckpt["model"].items() if k.startswith("head.5.")]
    return {"classifier_head_parameters": sum(v.numel() for v in head),
            "bundle_mb": round(sum(len(root.read_bytes(f)) for f in bundle.files()) / 2**20, 1)}


def measure(classes: int, pages: list[int], profile: str, env: dict[str, str]
            ) -> dict[str, Any]:
    from bench.inference import with_int8_trunks
    from bench.workload import write_workload
    from kzjobs.core.profile import load_profile
    from kzjobs.core.store import open_store
    from kzjobs.synth import generate

    with tempfile.TemporaryDirectory(prefix=f"kz-bench-classes-{classes}-") as tmp:
        store = str(Path(tmp) / "store")
        write_workload(store, books=2, pages_per_book=5, profile=profile, classes=classes,
                       level2=True)
        if load_profile(profile).classify.int8_trunk:  # calibrated as the bundle job does
            generate(open_store(store).child("calib"), books=1, pages_per_book=2, seed=4,
                     fonts=["ipaex-mincho"])
            with_int8_trunks(open_store(store), "model", "calib")
        runs = []
        for n in pages:
            runs.append(recognize_speed(store, "model", "coll", n, env | {
                "KZ_HOME": str(Path(tmp) / "kz")}))
            print(json.dumps({"classes": classes, **runs[-1]}), flush=True)
        return {"classes": classes, **bundle_figures(store), "runs": runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classes", type=int, nargs="+", default=[400, 2_312, 5_001],
                        help="Class counts, seg_fp included.")
    parser.add_argument("--pages", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--flatness", type=int, nargs="*", default=[500],
                        help="Also read this many pages at the largest class count.")
    parser.add_argument("--profile", default="bench",
                        help="The networks' sizes and inference settings of the seeded blend.")
    parser.add_argument("--out", type=Path, default=RESULTS / "classes.json")
    args = parser.parse_args()

    env = {**os.environ, "GX_ANALYTICS_ENABLED": "false"}
    largest = max(args.classes)
    sizes = [measure(n, sorted(set(args.pages) | (set(args.flatness) if n == largest else set())),
                     args.profile, env) for n in sorted(args.classes)]
    flat = sizes[-1]["runs"]
    result = {
        "command": "python -m bench.classes " + " ".join(sys.argv[1:]),
        "workload": "seeded untrained blend with level 2 (bench/workload.py), synthetic pages",
        "profile": args.profile, "sizes": sizes,
        "peak_rss_growth_mb": {"classes": largest, "pages": [flat[0]["pages"], flat[-1]["pages"]],
                               "mb": round(flat[-1]["peak_rss_mb"] - flat[0]["peak_rss_mb"], 1)},
        "machine": machine_info(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
