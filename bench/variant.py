"""A variant of a finished ``bench.pipeline`` run: the same data and the base run's models
up to one stage, then the rest of the pipeline under a changed profile.

``python -m bench.variant --name share75 --set classify.pseudo_share=0.75 --from finetune``
copies what the base run's stages before ``finetune`` wrote into
``runs/retrain/variant-share75``, runs ``finetune``, ``level2`` and ``bundle`` there with the
base profile plus the ``--set`` fields, and writes the ladder and the adaptation figures to
``bench/results/variant-share75.json``.

The stages are seeded, so the variant's ladder differs from the base run's
(``bench/results/pipeline.json``) only by what the variant changed: an experiment on
fine-tuning costs minutes, not the hour of training the base classifiers.

A variant is judged on the dev books (``bench.pipeline.SETS``), never on the test books.
``--incoming-pages N`` reads a larger incoming collection: N pages of each dev book
(the base run's pages are the first ones, byte for byte), adapted to and scored whole and
on the base run's pages alone. The variant then starts at ``detect_incoming`` or later.

``--second-round`` (with ``--from pseudolabel``) is a second round of pseudolabels: the
incoming collection is read again by the base run's fine-tuned classifiers, and the
base classifiers are fine-tuned again on the labels those choose.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from bench.pipeline import RESULTS, STAGES

STAGE_NAMES = [stage for stage, _command in STAGES]


def parse_overrides(items: list[str]) -> dict[str, dict[str, Any]]:
    """``section.field=value`` items (values read as YAML) as profile section overrides."""
    overrides: dict[str, dict[str, Any]] = {}
    for item in items:
        path, sep, value = item.partition("=")
        section, dot, field = path.partition(".")
        if not (sep and dot and section and field):
            raise ValueError(f"--set {item!r}: expected section.field=value")
        overrides.setdefault(section, {})[field] = yaml.safe_load(value)
    return overrides


def stage_outputs(plan: Any, stage: str) -> list[str]:
    """The store keys (files or prefixes) a stage of ``plan`` writes."""
    if stage == "level2":
        return [plan.keys.level2.prefix]
    if stage == "bundle":
        from kzjobs.release.bundle import BUNDLE_FILE

        return [plan.keys.key(BUNDLE_FILE)]
    calls = plan.args()[stage]
    calls = calls if calls and isinstance(calls[0], list) else [calls] if calls else []
    outs = [call[call.index("--out") + 1] for call in calls if "--out" in call]
    return outs + ([plan.keys.pseudo_report] if stage == "pseudolabel" else [])


def second_round_reads(plan: Any, base: Any) -> list[list[str]]:
    """``plan``'s ``classify_incoming`` calls, each with the base run's fine-tuned
    classifier in place of the base one (its predictions keep the base one's key)."""
    from kzjobs.core.keys import finetuned

    teacher = {plan.keys.classifier(kind, k):
               base.keys.classifier(finetuned(kind), k)
               for kind in plan.kinds for k in range(plan.n_folds)}
    return [[teacher.get(arg, arg) for arg in call] for call in plan.args()["classify_incoming"]]


def _under(key: str, prefixes: list[str]) -> bool:
    return any(key == p or key.startswith(p + "/") for p in prefixes)


def copy_base(store: Any, base: Any, variant: Any, start: str, rerun: tuple[str, ...] = ()
              ) -> list[str]:
    """Copy into ``variant``'s run what ``base``'s stages before ``start`` wrote (and not
    what a later stage wrote under the same prefix, such as a detector's OOF boxes), but
    for the stages of ``rerun``. Returns the keys copied; keys already in the variant's run
    are kept."""
    before = [stage for stage in STAGE_NAMES[: STAGE_NAMES.index(start)] if stage not in rerun]
    keep = [o for stage in before for o in stage_outputs(base, stage)]
    redo = [o for stage in STAGE_NAMES if stage not in before
            for o in stage_outputs(base, stage)]
    copied = []
    for key in store.list(base.run):
        if _under(key, keep) and not _under(key, redo):
            dest = variant.run + key.removeprefix(base.run)
            if not store.exists(dest):
                store.write_bytes(dest, store.read_bytes(key))
            copied.append(dest)
    return copied


def larger_heldout(store: Any, pages: int) -> tuple[str, str]:
    """Dev books of ``pages`` pages each (``datasets/dev-pN`` and the incoming
    ``datasets/incoming-dev-pN``), made with the base run's defaults; their first pages
    must be the base run's dev pages, byte for byte (pages do not depend on each other)."""
    from bench.pipeline import HELDOUT_BOOKS, SEED, SETS, VOCABULARY_SIZE, make_heldout
    from kzjobs.synth.fonts import split

    base, _incoming, offset = SETS["dev"]
    heldout, incoming = f"{base}-p{pages}", f"datasets/incoming-dev-p{pages}"
    make_heldout(store, heldout, incoming, books=HELDOUT_BOOKS, pages=pages,
                 seed=SEED + offset, fonts=list(split("dev")), vocabulary_size=VOCABULARY_SIZE)
    for key in store.list(f"{base}/images"):
        twin = heldout + key.removeprefix(base)
        if not store.exists(twin) or store.read_bytes(twin) != store.read_bytes(key):
            raise ValueError(f"{twin} is not the base run's {key}: the base run's dev "
                             "books were not made with bench.pipeline's defaults")
    return heldout, incoming


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True, help="The variant's run: variant-NAME.")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="SECTION.FIELD=VALUE", help="A profile field to change.")
    parser.add_argument("--from", dest="start", default="finetune",
                        choices=STAGE_NAMES[1:], help="The first stage to run again.")
    parser.add_argument("--profile", default="bench", help="The base run's profile.")
    parser.add_argument("--work", default="var/bench")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--incoming-pages", type=int, default=0, metavar="N",
                        help="Adapt to N pages of each dev book, not the base run's.")
    parser.add_argument("--second-round", action="store_true",
                        help="Pseudolabels chosen by the base run's fine-tuned classifiers "
                        "(with --from pseudolabel).")
    parser.add_argument("--out", help="Default: bench/results/variant-NAME.json.")
    args = parser.parse_args()
    try:
        overrides = parse_overrides(args.overrides)
    except ValueError as exc:
        parser.error(str(exc))
    if args.incoming_pages and STAGE_NAMES.index(args.start) < STAGE_NAMES.index(
            "detect_incoming"):
        parser.error("--incoming-pages changes the incoming collection: start at "
                     "detect_incoming or later")
    if args.second_round and (args.start != "pseudolabel" or args.incoming_pages):
        parser.error("--second-round reads the base run's incoming pages again: use it with "
                     "--from pseudolabel alone")

    from bench.machine import machine_info
    from bench.pipeline import (
        SETS,
        ablation,
        adaptation,
        bench_plan,
        model_train_seconds,
        run_stages,
        use_work,
    )
    from bench.shared import variant_profile
    from kzjobs.core.profile import Profile, load_profile
    from kzjobs.core.store import open_store
    from kzjobs.release.bundle import BUNDLE_FILE

    work = Path(args.work).resolve()
    store_uri, env = use_work(work)
    store = open_store(store_uri)
    base = bench_plan(args.profile)
    if not store.exists(base.keys.key(BUNDLE_FILE)):
        parser.error(f"no finished base run at {store_uri}/{base.run}: run "
                     f"`python -m bench.pipeline --profile {args.profile}` first")

    base_data = load_profile(args.profile).model_dump(mode="json", by_alias=True)
    profile = Profile.model_validate(variant_profile(base_data, overrides)
                                     | {"name": f"{args.profile}-{args.name}"})
    profile_path = work / "variants" / f"{args.name}.yaml"
    profile_path.parent.mkdir(parents=True, exist_ok=True)
    profile_path.write_text(yaml.safe_dump(profile.model_dump(mode="json", by_alias=True)))

    heldout, incoming = SETS["dev"][:2]
    if args.incoming_pages:
        heldout, incoming = larger_heldout(store, args.incoming_pages)
    plan = bench_plan(str(profile_path), f"variant-{args.name}", heldout,
                      [incoming, SETS["test"][1]])
    rerun = ("classify_incoming",) if args.second_round else ()
    copied = copy_base(store, base, plan, args.start, rerun)
    print(f"== variant {args.name}: {len(copied)} files of {base.run} before {args.start}",
          file=sys.stderr, flush=True)
    rest = [*rerun, *STAGE_NAMES[STAGE_NAMES.index(args.start):]]
    plan_args = plan.args()
    if args.second_round:
        plan_args["classify_incoming"] = second_round_reads(plan, base)
    stages = {stage: plan_args[stage] if stage in rest else [] for stage in STAGE_NAMES}
    seconds = run_stages(stages, env, args.jobs, store, plan.keys.key("bench-stage-seconds.json"))
    result = {
        "command": "python -m bench.variant " + " ".join(sys.argv[1:]),
        "machine": machine_info(),
        "base": {"run": base.run, "profile": args.profile},
        "from": args.start,
        "overrides": overrides,
        "train_seconds": {stage: seconds[stage] for stage in rest},
        "model_train_seconds": model_train_seconds(store, plan.run),
        "set": "dev",
        "quality": ablation(store, plan.run, heldout, str(profile_path)),
        "adaptation": adaptation(store, plan, heldout),
    }
    if heldout != SETS["dev"][0]:  # the base run's pages alone, as its ladder was scored
        result["incoming_pages_per_book"] = args.incoming_pages
        result["quality_on_base_pages"] = ablation(store, plan.run, SETS["dev"][0],
                                                   str(profile_path))
    out = Path(args.out or RESULTS / f"variant-{args.name}.json")
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False))
    print(json.dumps(result["quality"], indent=2))


if __name__ == "__main__":
    main()
