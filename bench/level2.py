"""Blend, pseudolabel rule and level 2: quality and speed on simulated classifier outputs.

``python -m bench.level2 [--books N]`` writes ``bench/results/level2.json``. The
classifier outputs are simulated (``kzjobs.level2.simulate``) with learnable noise:
two kinds, each worse on half of the classes, one louder than the other, and false
boxes spanning two characters. When a run's real OOF predictions exist
(``--run PREFIX --store URI``), the same figures are measured on them too.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.machine import machine_info, peak_rss_mb

OUT = Path(__file__).parent / "results" / "level2.json"


def measure(oof: list, truth: Any, incoming: list | None, incoming_truth: Any, cfg: Any,
            pseudo_cfgs: dict[str, Any], pages: Any = None) -> dict[str, Any]:
    from kzjobs.level2.model import predict
    from kzjobs.level2.train import train
    from kzjobs.method.blend import blend
    from kzjobs.method.predictions import attach_truth, box_folds, top_two
    from kzjobs.method.pseudo import calibrate, evaluate, margins, select

    n_rows = sum(len(f) for f in oof)
    t = time.perf_counter()
    blended = blend(oof)
    blend_s = time.perf_counter() - t
    known = attach_truth(blended, truth).merge(box_folds(oof), on=["image_id", "box_id"])
    figures: dict[str, Any] = {
        "oof_boxes": len(blended), "oof_prediction_rows": n_rows,
        "blend_rows_per_s": round(n_rows / blend_s),
        "pseudo_rule_on_oof": {n: evaluate(known, c) for n, c in pseudo_cfgs.items()},
    }
    t = time.perf_counter()
    result = train(oof, truth, cfg, pages=pages)
    figures["level2_train_s"] = round(time.perf_counter() - t, 2)
    figures["level2_oof"] = {k: result.report[k] for k in
                             ("boxes", "rows", "candidate_recall", "level2", "blend")}
    if incoming:
        t = time.perf_counter()
        got = predict(incoming, result.model, drop_seg_fp=False)
        predict_s = time.perf_counter() - t
        new = attach_truth(blend(incoming), incoming_truth)
        right = top_two(new)[0] == new["true"].to_numpy(dtype=object)
        rules = {}
        for name, c in pseudo_cfgs.items():
            # the calibrated rule takes its threshold from the labelled OOF, as the job does
            threshold = calibrate(known, c.target_accuracy) if c.rule == "calibrated" else None
            kept, threshold = select(new, c, threshold=threshold)
            rules[name] = {"fraction_kept": float(kept.mean()),
                           "accuracy_kept": float(right[kept].mean()) if kept.any() else None,
                           "threshold": threshold}
        got = attach_truth(got, incoming_truth)
        figures["incoming"] = {
            "boxes": len(new), "models": len(incoming),
            "predict_boxes_per_s": round(len(new) / predict_s),
            "level2_accuracy": float((got["code"] == got["true"]).mean()),
            "blend_accuracy": float(right.mean()),
            "pseudo_rule": rules,
            "margin_median": float(np.nanmedian(margins(new)[1])),
        }
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--books", type=int, default=8)
    parser.add_argument("--pages-per-book", type=int, default=6)
    parser.add_argument("--boxes-per-page", type=int, default=150)
    parser.add_argument("--profile", default="bench")
    parser.add_argument("--run", default="", help="a training run prefix with real OOF files")
    parser.add_argument("--store", default=None)
    parser.add_argument("--out", default=str(OUT))
    args = parser.parse_args()

    from kzjobs.core.profile import load_profile
    from kzjobs.level2.simulate import KindSpec, simulate
    from kzjobs.method.config import PseudoConfig
    from kzjobs.method.predictions import truth_frame

    cfg = load_profile(args.profile).level2
    pseudo_cfgs = {"margin_5_10": PseudoConfig(), "quantile_0.8": PseudoConfig(rule="quantile"),
                   "calibrated_0.99": PseudoConfig(rule="calibrated", target_accuracy=0.99)}
    kinds = (KindSpec("a", (0.0, 0.5), 0.9, 0.4), KindSpec("b", (0.5, 1.0), 0.9, 0.4, 1.4))
    shape = {"kinds": kinds, "pages_per_book": args.pages_per_book,
             "boxes_per_page": args.boxes_per_page, "n_classes": 400, "easy": 0.7,
             "merged": 0.08, "top_k": 10}
    t = time.perf_counter()
    train_sim = simulate(books=args.books, seed=0, **shape)
    new_sim = simulate(books=2, seed=1, book_prefix="t", **shape)
    sim_s = time.perf_counter() - t
    out: dict[str, Any] = {
        "machine": machine_info(),
        "profile": args.profile,
        "level2_config": cfg.model_dump(),
        "simulated": {
            "shape": {k: v for k, v in shape.items() if k != "kinds"} | {
                "books": args.books, "kinds": [k.__dict__ for k in kinds]},
            "simulate_s": round(sim_s, 1),
            **measure(train_sim.oof(), truth_frame(train_sim.boxes), new_sim.frames,
                      truth_frame(new_sim.boxes), cfg, pseudo_cfgs, pages=train_sim.truth),
        },
    }
    if args.run:
        from kzjobs.core.store import open_store
        from kzjobs.method.predictions import load_oof

        frames, truth = load_oof(open_store(args.store), args.run)
        out["real_oof"] = {"run": args.run, **measure(frames, truth, None, None, cfg,
                                                      pseudo_cfgs)}
    out["peak_rss_mb"] = round(peak_rss_mb())
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
