"""Classifier inference in fp32 and in bf16 (on CPUs with AMX, ``kzjobs.device``): the same
held-out pages and detector boxes, read by the final blend both ways.

``python -m bench.precision [--work var/bench]`` (after ``bench.pipeline``) writes
``bench/results/precision.json``: the share of boxes whose blended top class is the same,
the bundle's F1 both ways (with level 2 when it has it), and the classifiers' seconds
a page on every core.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from bench.machine import machine_info

OUT = Path(__file__).parent / "results" / "precision.json"


def compare(store: Any, run: str, heldout: str) -> dict[str, Any]:
    import numpy as np
    import pandas as pd

    from bench.pipeline import decided_f1
    from kzjobs.blend import blend, top_two
    from kzjobs.bundle import Bundle
    from kzjobs.data.dataset import Dataset
    from kzjobs.device import cpu_has_amx
    from kzjobs.recognize.recognizer import Recognizer, frames_per_model

    if not cpu_has_amx():
        return {"bf16": "not used: this CPU has no AMX, so classifiers run in fp32"}
    root = store.child(run)
    rec = Recognizer.from_bundle(Bundle.load(root), root)
    # `amp` off: fp32 everywhere; on: bf16 for the classifiers on this CPU.
    profiles = {name: rec.profile.model_copy(update={"classify": rec.profile.classify.model_copy(
        update={"amp": amp})}) for name, amp in (("fp32", False), ("bf16", True))}
    ds = Dataset.open(heldout, store)
    seconds = dict.fromkeys(profiles, 0.0)
    pages: dict[str, list[list[pd.DataFrame]]] = {name: [] for name in profiles}
    for image_id in ds.image_ids():
        image = ds.read_image(image_id)
        boxes = rec.detect(image)
        for name, profile in profiles.items():
            rec.profile = profile
            started = time.perf_counter()
            pages[name].append(rec.classify(image_id, image, boxes))
            seconds[name] += time.perf_counter() - started
    out: dict[str, Any] = {"pages": len(ds.image_ids()), "classifiers": len(rec.classifiers)}
    top = {}
    for name, profile in profiles.items():
        rec.profile = profile
        frames = frames_per_model(pages[name])
        top[name] = top_two(blend(frames))[0]
        out[name] = {"f1": decided_f1(ds.annotations, rec.decide(frames)),
                     "classify_seconds_per_page": round(seconds[name] / out["pages"], 3)}
    out["same_top_class"] = round(float(np.mean(top["fp32"] == top["bf16"])), 4)
    out["boxes"] = len(top["fp32"])
    out["speedup"] = round(seconds["fp32"] / seconds["bf16"], 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default="var/bench", help="bench.pipeline's --work")
    parser.add_argument("--run", default="runs/retrain/bench-bench")
    parser.add_argument("--heldout", default="datasets/heldout")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    from kzjobs.store import open_store

    store = open_store(str(Path(args.work).resolve() / "store"))
    result = {"command": "python -m bench.precision", "machine": machine_info(),
              **compare(store, args.run, args.heldout)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
