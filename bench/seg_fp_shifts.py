"""How far to lower ``seg_fp`` on books in unfamiliar hands: the dev books read once by a
finished ``bench.pipeline`` run's blend, then decided under each fixed shift.

``python -m bench.seg_fp_shifts [--work var/bench] [--shifts 0 2 4 6 8]`` writes
``bench/results/seg-fp-shifts.json``: per shift, the F1 of the blend and of level 2, each
against the unshifted rung with a paired bootstrap over pages (``bench.shared``), and how
many true characters the decision dropped as ``seg_fp``. Dev books only: the chosen shift
goes into a profile (``pseudo.seg_fp_shift``), and the test books are read by the
pipeline.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bench.machine import machine_info
from bench.pipeline import RESULTS, SETS, bench_plan, read_by_model, use_work


def shifted_ladder(frames: list[Any], level2: Any, truth: dict[str, Any],
                   boxes: dict[str, Any], shifts: list[float]) -> dict[str, Any]:
    """The blend's and level 2's rungs under each shift (``frames``: one per model)."""
    from bench.errors import reading_errors
    from bench.shared import decided_f1, ladder_gains
    from kzjobs.level2.model import predict
    from kzjobs.method.shifts import shift_seg_fp
    from kzjobs.recognize.recognizer import top_class

    ladder: dict[str, Any] = {}
    dropped: dict[str, int] = {}
    for shift in shifts:
        moved = [shift_seg_fp(f, shift) for f in frames]
        label = f", seg_fp shift {shift:g}" if shift else ""
        for rung, decided in (("blend", top_class(moved)), ("+ level 2", predict(moved, level2))):
            ladder[rung + label] = decided_f1(truth, decided, pages=True)
            errors = reading_errors(truth, decided, boxes)
            dropped[rung + label] = errors["dropped"]
    gains = ladder_gains(ladder)
    return {rung: figures | {"dropped": dropped[rung]} for rung, figures in gains.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", default="var/bench")
    parser.add_argument("--profile", default="bench")
    parser.add_argument("--shifts", type=float, nargs="+", default=[0, 2, 4, 6, 8])
    parser.add_argument("--out", type=Path, default=RESULTS / "seg-fp-shifts.json")
    args = parser.parse_args()
    store_uri, _env = use_work(Path(args.work).resolve())

    from kzjobs.core.store import open_store
    from kzjobs.data.dataset import Dataset
    from kzjobs.recognize.recognizer import Recognizer
    from kzjobs.release.bundle import Bundle

    store = open_store(store_uri)
    run = bench_plan(args.profile).run
    root = store.child(run)
    bundle = Bundle.load(root).model_copy(update={"seg_fp_shift": 0.0, "class_shifts": {}})
    rec = Recognizer.from_bundle(bundle, root)
    if rec.level2 is None:
        raise SystemExit(f"{run}: its bundle has no level 2 to decide with")
    dev = Dataset.open(SETS["dev"][0], store)
    models, boxes = read_by_model(rec, dev)
    ladder = shifted_ladder(list(models.values()), rec.level2, dev.annotations, boxes,
                            args.shifts)
    result = {"command": "python -m bench.seg_fp_shifts " + " ".join(sys.argv[1:]),
              "run": run, "set": "dev", "ladder": ladder, "machine": machine_info()}
    args.out.write_text(json.dumps(result, indent=1, ensure_ascii=False) + "\n")
    for rung, fig in ladder.items():
        gain = fig.get("gain") or {}
        print(f"{rung:32} {fig['f1']:.4f} dropped {fig['dropped']:5d} "
              f"{gain.get('gain', 0):+.4f} {gain.get('interval', '')} {gain.get('verdict', '')}")


if __name__ == "__main__":
    main()
