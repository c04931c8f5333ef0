"""Inference settings of the trained blend against F1 and speed: the same held-out pages,
read by the bundle ``bench.pipeline`` left, once per variant of its profile's inference
knobs (detector scale and proposals, classifier scale, folds and text block, layout;
fp32 against bf16 where the CPU does bf16 in hardware).

``python -m bench.inference [--work var/bench]`` writes ``bench/results/inference.json``:
per variant the F1 (overall and per book), the seconds a page of each step, and pages/s
of the three steps together (pages decoded beforehand, outputs not written; ``bench.
pipeline``'s and ``bench.scale``'s recognize figures are the end-to-end ones). Every
variant is read ``--rounds`` times, in turn, and its fastest reading counts. A variant
overrides the bundle's profile, as a YAML passed to ``kzjobs recognize --profile`` does.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from bench.machine import machine_info
from bench.shared import decided_f1, variant_profile

OUT = Path(__file__).parent / "results" / "inference.json"

# name -> (overrides of the bundle's profile, the networks read in NCHW instead of the
# channels_last they load in). The first is the baseline.
VARIANTS: dict[str, tuple[dict[str, dict[str, Any]], tuple[str, ...]]] = {
    "as trained": ({}, ()),  # the bundle's own settings
    "detector in NCHW layout": ({}, ("detector",)),
    "classifiers in NCHW layout": ({}, ("classifiers",)),
    "classifiers read whole pages": ({"classify": {"read_margin": 0}}, ()),
    "classifiers read the text block, margin 32": ({"classify": {"read_margin": 32}}, ()),
    "detector at 0.85 scale": ({"detect": {"test_scale": 0.85}}, ()),
    "detector at 0.75 scale": ({"detect": {"test_scale": 0.75}}, ()),
    "classifiers at 0.85 scale": ({"classify": {"tta_scales": [0.85]}}, ()),
    "one fold": ({"classify": {"inference_folds": 1}}, ()),
    "one fold, detector at 0.75 scale": ({
        "classify": {"inference_folds": 1}, "detect": {"test_scale": 0.75},
    }, ()),
    "... and classifiers at 0.85 scale": ({
        "classify": {"inference_folds": 1, "tta_scales": [0.85]},
        "detect": {"test_scale": 0.75},
    }, ()),
    # Only where bf16 is used at all (kzjobs.core.device.cpu_has_bf16): elsewhere they are
    # the first variant.
    "fp32 classifiers": ({"classify": {"amp": False}}, ()),
    "fp32 throughout": ({"classify": {"amp": False}, "detect": {"amp": False}}, ()),
    # The trunks calibrated on the training books and added to the bundle when it has none
    # (with_int8_trunks).
    "int8 classifier trunks": ({"classify": {"int8_trunk": True}}, ()),
    "float classifier trunks": ({"classify": {"int8_trunk": False}}, ()),  # int8 bundles
}


def with_int8_trunks(store: Any, run: str, dataset: str) -> None:
    """Give the run's bundle int8 classifier trunks (``kzjobs.classify.quantize``),
    calibrated as the bundle job does on ``dataset``, when it has none."""
    from kzjobs.classify.quantize import quantize_bundle
    from kzjobs.core.profile import Profile
    from kzjobs.data.dataset import Dataset
    from kzjobs.release.bundle import Bundle

    root = store.child(run)
    bundle = Bundle.load(root)
    if not bundle.int8_trunks:
        cfg = Profile.model_validate(bundle.profile_data).classify
        quantize_bundle(bundle, root, Dataset.open(dataset, store), cfg).save(root)


def read_with(store: Any, run: str, heldout: Any, pages: list[tuple[str, Any]], name: str,
              overrides: dict[str, dict[str, Any]], nchw: tuple[str, ...]) -> dict[str, Any]:
    """One variant over ``pages`` (decoded once for every variant) of the ``heldout``
    Dataset."""
    import torch

    from kzjobs.core.profile import Profile
    from kzjobs.recognize.recognizer import Recognizer, frames_per_model
    from kzjobs.release.bundle import Bundle

    root = store.child(run)
    bundle = Bundle.load(root)
    base = dict(bundle.profile_data) or {"name": bundle.profile}
    profile = Profile.model_validate(variant_profile(base, overrides))
    rec = Recognizer.from_bundle(bundle, root, profile=profile)
    networks = {"detector": [rec.detector], "classifiers": [c.model for c in rec.classifiers]}
    for part in nchw:
        for network in networks[part]:
            network.to(memory_format=torch.contiguous_format)
    rec.recognize_page(*pages[0])  # warm-up: oneDNN picks its kernels on the first call
    seconds = {"detect": 0.0, "classify": 0.0, "decide": 0.0}
    frames_of_pages = []
    for image_id, image in pages:
        started = time.perf_counter()
        boxes = rec.detect(image)
        detected = time.perf_counter()
        frames_of_pages.append(rec.classify(image_id, image, boxes))
        seconds["detect"] += detected - started
        seconds["classify"] += time.perf_counter() - detected
    started = time.perf_counter()
    decided = rec.decide(frames_per_model(frames_of_pages))
    seconds["decide"] = time.perf_counter() - started
    total = sum(seconds.values())
    return {
        "name": name, "overrides": overrides, "nchw": list(nchw),
        "classifiers": len(rec.classifiers), "pages": len(pages), "characters": len(decided),
        **decided_f1(heldout.annotations, decided),
        "seconds_per_page": {k: round(v / len(pages), 3) for k, v in seconds.items()},
        "pages_per_second": round(len(pages) / total, 3),
    }


def fastest(readings: list[dict[str, Any]]) -> dict[str, Any]:
    """The fastest of a variant's readings, with every reading's pages/s: on a shared host
    other load only ever slows a reading down, so the fastest is the closest to the
    variant's own speed (as ``timeit`` takes the minimum)."""
    best = max(readings, key=lambda r: r["pages_per_second"])
    return best | {"pages_per_second_readings": [r["pages_per_second"] for r in readings]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default="var/bench", help="bench.pipeline's --work")
    parser.add_argument("--run", default="runs/retrain/bench-bench")
    parser.add_argument("--heldout", default="datasets/dev")  # choices: dev books
    parser.add_argument("--train", default="datasets/train",
                        help="What int8 trunks are calibrated on, if the bundle has none.")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--rounds", type=int, default=2,
                        help="Read every variant this many times, in turn; the fastest counts.")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be 1 or more")

    from kzjobs.core.device import cpu_has_bf16
    from kzjobs.core.store import open_store
    from kzjobs.data.dataset import Dataset

    store = open_store(str(Path(args.work).resolve() / "store"))
    heldout = Dataset.open(args.heldout, store)
    pages = [(image_id, heldout.read_image(image_id)) for image_id in heldout.image_ids()]
    variants = [v for v in args.variants if cpu_has_bf16() or "amp" not in
                VARIANTS[v][0].get("classify", {})]  # emulated bf16 is slower than fp32
    if any(VARIANTS[v][0].get("classify", {}).get("int8_trunk") for v in variants):
        with_int8_trunks(store, args.run, args.train)
    # In turn, round after round, so that a slow spell of the host hits every variant.
    readings: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name in variants:
            readings[name].append(read_with(store, args.run, heldout, pages, name,
                                            *VARIANTS[name]))
            print(json.dumps(readings[name][-1]), flush=True)
    result = {"command": "python -m bench.inference", "machine": machine_info(),
              "rounds": args.rounds,
              "variants": [fastest(readings[name]) for name in variants]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
