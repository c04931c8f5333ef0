"""Read-time adaptation against F1: the dev pages ``bench.pipeline`` left (choices are
made on dev books), read by ``kzjobs recognize`` with the bundle's class shifts, with
none, with ``--adapt``, and with ``--adapt`` once per ``--set`` (a variant of the
bundle's profile).

``python -m bench.adapt --set pseudo.max_class_shift=2 --set pseudo.min_class_expected=5``
writes ``bench/results/adapt.json`` (``bench.pipeline.read_time_adaptation``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench.machine import machine_info

OUT = Path(__file__).parent / "results" / "adapt.json"


def main() -> None:
    from bench.pipeline import read_time_adaptation, use_work
    from bench.variant import parse_overrides
    from kzjobs.core.store import open_store

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="var/bench", help="bench.pipeline's --work")
    parser.add_argument("--run", default="runs/retrain/bench-bench")
    parser.add_argument("--heldout", default="datasets/dev")  # choices: dev books
    parser.add_argument("--set", dest="settings", action="append", default=[],
                        metavar="SECTION.FIELD=VALUE", help="one variant each (repeatable)")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    work = Path(args.work).resolve()
    store_uri, _env = use_work(work)
    variants = {item: parse_overrides([item]) for item in args.settings}
    reads = read_time_adaptation(open_store(store_uri), args.run, args.heldout, work, variants)
    result = {"command": "python -m bench.adapt " + " ".join(
                  f"--set {s}" for s in args.settings),
              "machine": machine_info(), "reads": reads}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    print(json.dumps(reads, indent=2))


if __name__ == "__main__":
    main()
