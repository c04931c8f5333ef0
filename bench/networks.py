"""The networks' cost of reading a page on this machine, without a trained blend: a
profile's detector and one of its classifiers, built with random weights, read
synthetic pages (the bench's own generator, their true boxes given to the classifier).

``python -m bench.networks [--profile bench --pages 4 --rounds 3]`` writes
``bench/results/networks.json``: seconds a page of the detector and of one classifier,
on one torch thread (as each of ``kzjobs recognize``'s page workers reads) and on all of
them, for the networks as loaded for inference (batch norms folded into the
convolutions, channels_last) and with their batch norms left in place. From the
one-thread figures, the pages/s the networks allow with one page worker per core:
``cores / (detect + classifiers x classify)`` (from the all-thread figures, one page at a
time: ``1 / (...)``), an upper bound on ``kzjobs recognize``, which also decodes pages,
runs level 2 and writes outputs.

Random weights cost what trained ones do in the convolutions, but a trained detector
keeps more boxes (about 190 on a bench page, few or none here), which cost in its NMS and
box head: on one AVX2 EPYC core the bench detector read 0.61 pages/s trained
(``bench.detect``, page decoding included) against 0.77 here. So the bound is an
optimistic one. Takes a few minutes; the figure to run on a new machine before deciding
whether a 2.6-hour ``bench.pipeline`` run can meet the speed goal there.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.machine import machine_info

OUT = Path(__file__).parent / "results" / "networks.json"


def synthetic_pages(n: int, seed: int) -> list[tuple[Any, list[Any]]]:
    """``n`` generated pages, each as (PIL image, its true boxes)."""
    from kzjobs.core.store import open_store
    from kzjobs.data.dataset import Dataset
    from kzjobs.synth import generate

    with tempfile.TemporaryDirectory() as tmp:
        store = open_store(tmp)
        generate(store, books=1, pages_per_book=n, seed=seed)
        ds = Dataset(store)
        return [(ds.read_image(i).copy(), ds.annotations[i]) for i in ds.image_ids()]


def networks(profile: Any, n_classes: int, *, folded: bool) -> tuple[Any, Any]:
    """The profile's detector and first classifier kind with random weights (batch-norm
    statistics away from their defaults, so that folding them changes the weights),
    loaded for inference as ``kzjobs recognize`` loads them, or without the folding."""
    import torch

    from kzjobs.classify.model import build_model, model_args
    from kzjobs.core.device import for_inference
    from kzjobs.detect.model import build_detector

    torch.manual_seed(0)
    detector = build_detector(profile.detect, load_weights=False)
    classifier = build_model(model_args(profile.classify.kinds[0], n_classes, profile.classify))
    for model in (detector, classifier):
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    cpu = torch.device("cpu")
    if folded:
        return for_inference(detector, cpu), for_inference(classifier, cpu)
    return tuple(m.eval().to(memory_format=torch.channels_last) for m in (detector, classifier))


def read_seconds(detector: Any, classifier: Any, profile: Any,
                 pages: list[tuple[Any, list[Any]]]) -> dict[str, float]:
    """Seconds a page of the detector and of the classifier over ``pages``."""
    import numpy as np
    import torch

    from kzjobs.classify.predict import predict_logits
    from kzjobs.detect.engine import detect_page

    cpu = torch.device("cpu")
    seconds = {"detect": 0.0, "classify": 0.0}
    for image, boxes in pages:
        started = time.perf_counter()
        detect_page(detector, image, profile.detect, cpu, amp=profile.detect.amp)
        detected = time.perf_counter()
        predict_logits(classifier, np.asarray(image), boxes, profile.classify, device=cpu)
        seconds["detect"] += detected - started
        seconds["classify"] += time.perf_counter() - detected
    return {step: value / len(pages) for step, value in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="bench")
    parser.add_argument("--pages", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3,
                        help="Read every variant this many times, in turn; the fastest counts.")
    parser.add_argument("--classes", type=int, default=2000,
                        help="The classifier's classes (seg_fp included): its last layer.")
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    if args.rounds < 1 or args.pages < 1:
        parser.error("--pages and --rounds must be 1 or more")

    import torch

    from kzjobs.core.device import torch_threads
    from kzjobs.core.profile import load_profile

    profile = load_profile(args.profile)
    pages = synthetic_pages(args.pages, args.seed)
    cores = torch.get_num_threads()
    models = {name: networks(profile, args.classes, folded=folded)
              for name, folded in (("as loaded", True), ("batch norms not folded", False))}
    for detector, classifier in models.values():  # warm-up: oneDNN picks its kernels
        read_seconds(detector, classifier, profile, pages[:1])
    readings: dict[tuple[str, int], list[dict[str, float]]] = {}
    for _ in range(args.rounds):  # in turn, so that a slow spell hits every variant
        for threads in sorted({1, cores}):
            with torch_threads(threads):
                for name, (detector, classifier) in models.items():
                    readings.setdefault((name, threads), []).append(
                        read_seconds(detector, classifier, profile, pages))
    n_classifiers = len(profile.classify.kinds) * (
        profile.classify.inference_folds or profile.data.n_folds)
    variants = []
    for (name, threads), runs in readings.items():
        best = {step: round(min(r[step] for r in runs), 3) for step in runs[0]}
        page = best["detect"] + n_classifiers * best["classify"]
        variants.append({
            "name": name, "torch_threads": threads, "seconds_per_page": best,
            "classifiers": n_classifiers,
            # one page per worker, a worker per core (recognize's default on the CPU)
            "pages_per_second_bound": round((cores if threads == 1 else 1) / page, 3),
        })
    boxes = sum(len(b) for _, b in pages) / len(pages)
    result = {"command": " ".join(["python -m bench.networks", *sys.argv[1:]]),
              "machine": machine_info(), "profile": args.profile, "pages": len(pages),
              "boxes_per_page": round(boxes, 1), "rounds": args.rounds, "variants": variants}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
