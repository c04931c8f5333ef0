"""Detector quality on held-out books in UNSEEN fonts, CPU training time, inference speed
and peak memory, per profile.

``.venv/bin/python -m bench.detect [--profiles bench demo]`` writes
``bench/results/detect.json``:

1. One synthetic dataset (``kzjobs.synth``): books in four training fonts and books in
   two other fonts (``books.json`` says which font made each book). ``folds.json`` puts
   the books of the two held-out fonts in fold 0 and every other book in fold 1, so
   training fold 0 sees none of the held-out fonts.
2. Per profile, in child processes (so each peak RSS is its own):
   ``kzjobs detect train --fold 0`` (wall and CPU time; its validation F1 is the
   detection-only competition F1 on the held-out books), then
   ``kzjobs detect predict --valid-only`` on the same books (full pages at the profile's
   scale; pages/s of the detection loop, the same F1 again from the OOF boxes).

The data lives under ``--work`` (default ``var/bench/detect``) and is reused; models are
retrained on every run (``--keep-models`` reuses them, without training figures).
The seed of the data (8) differs from the one the bench profile was tuned on (7).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.machine import machine_info
from kzjobs.synth.fonts import FONT_SPLIT

OUT = Path(__file__).parent / "results" / "detect.json"
# Two brushes and two print hands of the training fonts; judged on the dev fonts
# (kzjobs.synth.fonts.FONT_SPLIT), since this bench's figures choose settings.
TRAIN_FONTS = ("kouzan-sousyo", "kouzan-brush", "aoyagi-kouzan", "hanazono")
TEST_FONTS = FONT_SPLIT.dev
SEED = 8
BOOKS_PER_FONT = 3
PAGES_PER_BOOK = 4
TARGET = 0.99
SEED_REFERENCE = "0.977-0.991 detection-only F1 on real books (the seed: resnet152, GPU)"


def _kzjobs() -> str:
    return str(Path(sys.executable).with_name("kzjobs"))


def run_child(argv: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run a ``kzjobs`` command; its JSON summary, wall/CPU seconds and peak RSS."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True)
    stdout = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed with exit code {proc.returncode}")
    return {
        "summary": json.loads(stdout),
        "wall_s": round(wall, 1),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024),  # Linux reports KiB
        "command": " ".join(["kzjobs", *argv[1:]]),
    }


def make_data(store: Any) -> dict[str, Any]:
    from kzjobs.synth import generate

    fonts = TRAIN_FONTS + TEST_FONTS
    summary = generate(store.child("data"), books=BOOKS_PER_FONT * len(fonts),
                       pages_per_book=PAGES_PER_BOOK, seed=SEED, fonts=fonts)
    books = summary["books"]
    folds = {book: 0 if font in TEST_FONTS else 1 for book, font in books.items()}
    store.write_json("data/folds.json", {"n_folds": 2, "books": folds})
    return {
        "seed": SEED,
        "train_fonts": list(TRAIN_FONTS),
        "test_fonts": list(TEST_FONTS),
        "judged_on": "dev",
        "train_books": sorted(b for b, f in folds.items() if f == 1),
        "test_books": sorted(b for b, f in folds.items() if f == 0),
        "pages_per_book": PAGES_PER_BOOK,
        "boxes": summary["boxes"],
    }


def bench_profile(profile: str, work: Path, env: dict[str, str], keep: bool) -> dict[str, Any]:
    """``profile`` is a shipped profile's name or a YAML's path; its runs go under its name."""
    from kzjobs.core.profile import load_profile

    name = load_profile(profile).name
    store_uri = str(work / "store")
    prefix = f"runs/{name}/detect/fold0"
    if not keep:
        shutil.rmtree(work / "store" / "runs" / name, ignore_errors=True)
    common = ["--store", store_uri, "--profile", profile, "--no-progress"]
    print(f"== detect bench: training the {profile} profile", file=sys.stderr, flush=True)
    train = run_child([_kzjobs(), "detect", "train", "--dataset", "data",
                       "--folds", "data/folds.json", "--fold", "0", "--out", prefix, *common], env)
    shutil.rmtree(work / "store" / prefix / "oof.parts", ignore_errors=True)
    print(f"== detect bench: predicting with the {profile} profile", file=sys.stderr, flush=True)
    predict = run_child([_kzjobs(), "detect", "predict", "--model", f"{prefix}/model.pt",
                         "--dataset", "data", "--valid-only", "--folds", "data/folds.json",
                         "--fold", "0", "--out", f"{prefix}/oof.csv", *common], env)
    t, p = train["summary"], predict["summary"]
    heldout = t["valid"]
    return {
        "config": load_profile(profile).detect.model_dump(mode="json"),
        "heldout_f1": round(heldout["f1"], 4),
        "heldout": {k: heldout[k] for k in ("precision", "recall", "tp", "fp", "fn")}
        | {"f1_by_book": {b: round(c["f1"], 4) for b, c in heldout["by_book"].items()}},
        "meets_target": heldout["f1"] >= TARGET,
        "train": {
            "skipped": bool(t.get("skipped")),
            "wall_s": train["wall_s"], "cpu_s": train["cpu_s"],
            "peak_rss_mb": train["peak_rss_mb"], "epochs": t["epochs"],
            "train_pages": t["train_pages"], "final_loss": t.get("loss"),
            "train_loop_s": t.get("train_seconds"),
            "command": train["command"],
        },
        "predict": {
            "pages": p["pages"], "boxes": p["boxes"], "seconds": p["seconds"],
            "pages_per_s": round(p["pages"] / p["seconds"], 3),
            "oof_f1": round(p["valid"]["f1"], 4), "seg_fp_boxes": p["seg_fp"],
            "peak_rss_mb": predict["peak_rss_mb"], "wall_s": predict["wall_s"],
            "command": predict["command"],
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profiles", nargs="+", default=["bench", "demo"])
    parser.add_argument("--work", type=Path, default=Path("var/bench/detect"))
    parser.add_argument("--keep-models", action="store_true",
                        help="reuse trained models (no training figures)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    from kzjobs.core.profile import load_profile
    from kzjobs.core.store import open_store

    work = args.work.resolve()
    env = dict(os.environ, KZ_HOME=str(work / "home"), GX_ANALYTICS_ENABLED="false")
    env.pop("KZ_STORE", None)
    env.pop("KZ_MLFLOW_URI", None)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_before = os.getloadavg()[0]
    data = make_data(open_store(work / "store"))
    profiles = {load_profile(p).name: bench_profile(p, work, env, args.keep_models)
                for p in args.profiles}
    result = {
        "part": "detect",
        "command": " ".join([".venv/bin/python -m bench.detect", *sys.argv[1:]]),
        "started": started,
        "metric": "detection-only competition F1 (box centre inside a ground-truth box) on "
                  "held-out books in fonts the training never saw",
        "target_f1": TARGET,
        "seed_reference": SEED_REFERENCE,
        "data": data,
        "profiles": profiles,
        "load_average_1m": {"start": round(load_before, 2), "end": round(os.getloadavg()[0], 2)},
        "machine": machine_info(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({p: {"heldout_f1": r["heldout_f1"], "train_wall_s": r["train"]["wall_s"],
                          "pages_per_s": r["predict"]["pages_per_s"]}
                      for p, r in profiles.items()}, indent=2))


if __name__ == "__main__":
    main()
