"""The end-to-end benchmark: train a profile on synthetic books, judge it on books whose
fonts the training never saw.

``python -m bench.pipeline [--profile bench]`` writes ``bench/results/pipeline.json``:

1. synthetic data in three sets of fonts apart (``kzjobs.synth.fonts.FONT_SPLIT``):
   training books; dev books, on which every choice is judged (A/Bs, thresholds, the
   ladder's best single model); test books with texts drawn independently, read once per
   run and reported. The dev and test pages also go, without labels, into the incoming
   collections pseudolabelling adapts to (as in the seed);
2. the retraining pipeline, stage by stage, with the same ``kzjobs`` commands the
   ``kz_retrain`` DAG runs (``kzjobs.orchestrate.plan.RetrainPlan``), each stage timed;
3. the ablation ladder on the dev and on the test books: each single model, the blend of
   the base kinds, + pseudolabel fine-tuning, + level 2; plus detection-only F1. Each
   rung's gain over the rung before it comes with a 90% interval of a paired bootstrap
   over pages, and "no measurable gain" when the interval holds 0
   (``bench.shared.ladder_gains``);
4. speed and peak memory of ``kzjobs recognize`` at 10 and 100 pages (and at 100 pages in
   one shard per core, side by side), and Tesseract on the same test pages;
5. the dev and test books read through ``kzjobs recognize`` with and without class shifts.

The ladders are drawn in ``ladder.png`` beside ``--out`` (``bench.figures``).

The result keys each set's figures under ``dev`` or ``test``. Every class of the
vocabulary is read by default (``--vocabulary-size 400``: the quick run of the 400 most
frequent). Every stage is resumable: a re-run reuses what the store already holds. Each
evaluation step is saved as it ends; ``--evaluate-only`` judges a finished run again.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.figures import draw_ladder
from bench.machine import machine_info
from bench.shared import decided_f1, ladder_gains

RESULTS = Path(__file__).parent / "results"

# The retraining stages in the DAG's order: (plan stage, kzjobs command).
STAGES = [
    ("pretrain", "pretrain"),  # no call when the profile's starting weights are fresh
    ("validate", "validate annotations"),
    ("folds", "folds"),
    ("detect_train", "detect train"),
    ("detect_oof", "detect predict"),
    ("merge_oof", "merge-boxes"),
    ("classify_train", "classify train"),
    ("detect_incoming", "detect predict"),
    ("classify_incoming", "classify predict"),
    ("pseudolabel", "pseudo"),
    ("finetune", "classify train"),
    ("level2", "level2 train"),
    ("bundle", "bundle"),
]

# The data's defaults (bench.variant makes larger dev sets with the same ones).
SEED = 100  # the training books'; dev books take SEED + 1, test books SEED + 2
HELDOUT_BOOKS = 2  # books of each of dev and test
VOCABULARY_SIZE: int | None = None  # every class; 400 is the quick run
QUICK_VOCABULARY_SIZE = 400
# Each held-out set: its labelled books, the same pages unlabelled (an incoming
# collection), and its seed's offset from SEED (test texts are drawn independently).
SETS = {"dev": ("datasets/dev", "datasets/incoming-dev", 1),
        "test": ("datasets/test", "datasets/incoming-test", 2)}


def make_data(store: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Training, dev, test and incoming collections (skipped when already there)."""
    from kzjobs.synth import generate

    made: dict[str, Any] = {}
    if not store.exists("datasets/train/train.csv"):
        made["train"] = generate(store.child("datasets/train"), books=args.train_books,
                                 pages_per_book=args.pages, seed=args.seed,
                                 fonts=args.font_cycle, vocabulary_size=args.vocabulary_size)
    for name, (labelled, incoming, offset) in SETS.items():
        if done := make_heldout(store, labelled, incoming, books=args.heldout_books,
                                pages=args.heldout_pages, seed=args.seed + offset,
                                fonts=args.fonts[name], vocabulary_size=args.vocabulary_size):
            made[name] = done["heldout"]
    return made


def split_fonts(train: list[str] | None, dev: list[str] | None, test: list[str] | None
                ) -> dict[str, list[str]]:
    """The fonts of each set: ``kzjobs.synth.fonts.FONT_SPLIT``'s unless given; dev and
    test fonts never in training, no test font in dev."""
    from kzjobs.synth.fonts import split

    sets = {"train": train or list(split("train")), "dev": dev or list(split("dev")),
            "test": test or list(split("test"))}
    for a, b in (("train", "dev"), ("train", "test"), ("dev", "test")):
        if seen := set(sets[a]) & set(sets[b]):
            raise ValueError(f"{b} fonts must not be {a} fonts: {sorted(seen)}")
    return sets


def make_heldout(store: Any, heldout: str, incoming: str, *, books: int, pages: int, seed: int,
                 fonts: list[str], vocabulary_size: int | None) -> dict[str, Any]:
    """The held-out books (labelled) at ``heldout`` and the same pages without labels at
    ``incoming``, the collection pseudolabelling adapts to (skipped when already there)."""
    from kzjobs.synth import generate

    made = {}
    if not store.exists(f"{heldout}/train.csv"):
        made["heldout"] = generate(store.child(heldout), books=books, pages_per_book=pages,
                                   seed=seed, fonts=fonts, vocabulary_size=vocabulary_size)
    into = store.child(incoming)
    for key in store.list(f"{heldout}/images"):
        dest = key.removeprefix(f"{heldout}/")
        if not into.exists(dest):
            into.write_bytes(dest, store.read_bytes(key))
    return made


def use_work(work: Path) -> tuple[str, dict[str, str]]:
    """Point this process and the jobs it launches at the bench's store and home under
    ``work``: returns the store URI and the jobs' environment."""
    store_uri = str(work / "store")
    os.environ.update({"KZ_STORE": store_uri, "KZ_HOME": str(work)})
    return store_uri, {**os.environ, "GX_ANALYTICS_ENABLED": "false"}


def bench_plan(profile: str, name: str | None = None, heldout: str = SETS["dev"][0],
               incoming: list[str] | None = None) -> Any:
    """The retraining plan of a bench run (by default ``bench-`` and the name of
    ``profile``, a shipped profile's name or a YAML's path): the training books, the dev
    books as its held-out set (what it chooses on), and the dev and test pages unlabelled
    as the incoming collections."""
    from kzjobs.core.profile import load_profile
    from kzjobs.orchestrate.plan import RetrainPlan

    incoming = incoming or [into for _books, into, _seed in SETS.values()]
    return RetrainPlan.build({"profile": profile, "dataset": "datasets/train",
                              "heldout": heldout, "incoming": incoming},
                             name or f"bench-{load_profile(profile).name}")


def run_stages(plan_args: dict[str, Any], env: dict[str, str], jobs: int, store: Any,
               timings: str) -> dict[str, float]:
    """Each stage's calls (folds, kinds) run ``jobs`` at a time, as the DAG's mapped tasks
    do; the cores are shared out between them (two torch processes each using every core
    are much slower than one thread each).

    Each stage's wall time is added to the store's ``timings`` file as it ends, so the
    figures sum every process of a run that was stopped and resumed."""
    from concurrent.futures import ThreadPoolExecutor

    from kzjobs.orchestrate.runner import run_local

    seconds: dict[str, float] = store.read_json(timings) if store.exists(timings) else {}
    cores = os.cpu_count() or 1
    for stage, command in STAGES:
        calls = plan_args[stage]
        calls = calls if calls and isinstance(calls[0], list) else [calls] if calls else []
        side_by_side = max(1, min(jobs, len(calls)))
        call_env = env | {"OMP_NUM_THREADS": str(max(1, cores // side_by_side))}
        started = time.perf_counter()
        for call in calls:
            print(f"== {stage}: kzjobs {command} {' '.join(call)}", file=sys.stderr, flush=True)
        with ThreadPoolExecutor(side_by_side) as pool:
            futures = [pool.submit(run_local, command, call, env=call_env) for call in calls]
            for future in futures:
                future.result()
        seconds[stage] = round(seconds.get(stage, 0.0) + time.perf_counter() - started, 1)
        store.write_json(timings, seconds)
    return seconds


def read_by_model(rec: Any, ds: Any) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """Every page of ``ds`` detected and classified once by ``rec``'s models, without
    shifts or decisions: one frame per model (``"<kind> fold<k>"``; a frame holds a box
    once, as blending joins frames on the box) and each page's detected boxes."""
    import pandas as pd

    frames: list[pd.DataFrame] = []
    boxes_by_page = {}
    for image_id in ds.image_ids():
        image = ds.read_image(image_id)
        boxes_by_page[image_id] = rec.detect(image)
        if boxes_by_page[image_id]:
            frames += rec.classify(image_id, image, boxes_by_page[image_id])
    every = pd.concat(frames, ignore_index=True)
    return ({f"{kind} fold{fold}": part for (kind, fold), part in every.groupby(["kind", "fold"])},
            boxes_by_page)


def ablation(store: Any, run: str, heldout: str, profile: str,
             train: str = "datasets/train", best: str | None = None) -> dict[str, Any]:
    """F1 of each rung of the ladder, from one pass of every model over the ``heldout``
    pages (with int8 trunks when the profile reads with them: those the bundle lacks, for
    the base models, calibrated on ``train`` as the bundle job does). The ladder's "best
    single model" is ``best`` (the one chosen on the dev books) when given, else the best
    on these pages."""
    import pandas as pd

    from kzjobs.core.keys import finetuned
    from kzjobs.core.profile import load_profile
    from kzjobs.data.dataset import Dataset
    from kzjobs.data.format import boxes_to_points
    from kzjobs.method.metric import score
    from kzjobs.recognize.recognizer import Recognizer, top_class
    from kzjobs.release.bundle import Bundle

    root = store.child(run)
    bundle = Bundle.load(root)
    # Load every classifier of the run (base kinds and fine-tuned), not only the bundle's.
    models = [k for k in root.list("classify") if k.endswith("/model.pt")]  # classify/<kind>/..
    kinds = sorted({k.split("/")[1] for k in models})
    # Raw logits (no shifts): the shifted rungs are measured from them below.
    everything = bundle.model_copy(update={"seg_fp_shift": 0.0, "class_shifts": {}, "classifiers": {
        kind: sorted(k for k in models if k.split("/")[1] == kind) for kind in kinds}})
    prof = load_profile(profile)  # every fold, whatever the profile reads pages with
    prof = prof.model_copy(update={"classify": prof.classify.model_copy(
        update={"inference_folds": 0})})
    if prof.classify.int8_trunk:
        from kzjobs.classify.quantize import quantize_bundle

        everything = quantize_bundle(everything, root, Dataset.open(train, store), prof.classify)
    rec = Recognizer.from_bundle(everything, root, profile=prof)
    ds = Dataset.open(heldout, store)
    truth = ds.annotations
    models, boxes_by_page = read_by_model(rec, ds)

    decisions: dict[str, pd.DataFrame] = {}  # the last rung's: where it goes wrong

    def f1_of(decided: pd.DataFrame, rung: str = "") -> dict[str, Any]:
        if rung:
            decisions[rung] = decided
        return decided_f1(truth, decided, pages=True)

    def of_kinds(chosen: list[str]) -> list[pd.DataFrame]:
        return [part for name, part in models.items() if name.split()[0] in chosen]

    tuned = [finetuned(k) for k in kinds if finetuned(k) in kinds]
    base = [k for k in kinds if k not in tuned]
    ladder: dict[str, Any] = {f"single {name}": f1_of(top_class([part]))
                              for name, part in models.items()}
    singles = {name: ladder[f"single {name}"]["f1"] for name in models
               if name.split()[0] in base}
    best = best if best in singles else max(singles, key=singles.get)
    ladder["best single model"] = ladder[f"single {best}"] | {"model": best}
    ladder["blend"] = f1_of(top_class(of_kinds(base)), "blend")
    if tuned:
        ladder["blend + pseudolabels"] = f1_of(top_class(of_kinds(tuned)), "blend + pseudolabels")
    if root.exists("level2/meta.json"):  # measured even when the bundle left it out
        from kzjobs.level2.model import Level2Model, predict

        level2 = Level2Model.load(root, "level2")
        ladder["+ level 2"] = f1_of(predict(of_kinds(list(level2.kinds)), level2),
                                    "+ level 2") | {
            "kinds": list(level2.kinds), "threshold": level2.threshold,
            "in_bundle": rec.level2 is not None}
    last = list(decisions)[-1]
    shift, class_shift = adaptation_rungs(ladder, store, run, prof, of_kinds, base, tuned,
                                          f1_of)
    detection = score(truth, boxes_to_points(boxes_by_page), ignore_code=True)
    from bench.errors import reading_errors

    errors = {"rung": last} | reading_errors(truth, decisions[last], boxes_by_page)
    matched = "+ level 2, class shares matched" if "+ level 2, class shares matched" in (
        decisions) else last
    return {"ladder": ladder_gains(ladder), "seg_fp_shift": shift | {"bundle": bundle.seg_fp_shift},
            "class_shift": class_shift | {"bundle_books": sorted(bundle.class_shifts)},
            "errors": errors,
            "errors_class_shares": {"rung": matched} | reading_errors(
                truth, decisions[matched], boxes_by_page),
            "detection_f1": round(detection.f1, 4),
            "detection_by_book": {b: round(c.f1, 4) for b, c in detection.by_book.items()},
            "pages": len(truth), "characters": sum(len(v) for v in truth.values())}


def adaptation_rungs(ladder: dict[str, Any], store: Any, run: str, prof: Any,
                     of_kinds: Callable[[list[str]], list[Any]], base: list[str],
                     tuned: list[str], f1_of: Callable[..., dict[str, Any]]
                     ) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ladder's rungs again under each shift the pseudolabel job can fit without
    labels, fitted as it fits them: on the base blend of the held-out pages (the incoming
    collection) against the same models' OOF blend. ``... , seg_fp shifted``: the
    ``seg_fp`` shift; ``... , class shares matched``: per-book class shifts. Returns the
    ``seg_fp`` fit and a summary of the class shifts."""
    from kzjobs.method.blend import blend
    from kzjobs.method.predictions import attach_truth, load_oof
    from kzjobs.method.pseudo import fit_class_shifts, fit_shift
    from kzjobs.method.shifts import shift_books, shift_seg_fp
    from kzjobs.recognize.recognizer import top_class

    oof, oof_truth = load_oof(store, run, base)
    known = attach_truth(blend(oof), oof_truth)
    incoming = blend(of_kinds(base))
    seg_fp = fit_shift(incoming, known, prof.pseudo.model_copy(update={"seg_fp_shift": "fit"}))
    books = fit_class_shifts(incoming, known, prof.pseudo.model_copy(update={"class_shift": True}))

    level2 = None
    if "+ level 2" in ladder:
        from kzjobs.level2.model import Level2Model, predict

        level2 = Level2Model.load(store.child(run), "level2")

    def rungs(label: str, shift: Callable[[Any], Any]) -> None:
        def shifted(chosen: list[str]) -> list[Any]:
            return [shift(f) for f in of_kinds(chosen)]

        ladder[f"blend, {label}"] = f1_of(top_class(shifted(base)))
        if tuned:
            ladder[f"blend + pseudolabels, {label}"] = f1_of(top_class(shifted(tuned)))
        if level2 is not None:
            ladder[f"+ level 2, {label}"] = f1_of(predict(shifted(list(level2.kinds)), level2),
                                                  f"+ level 2, {label}")

    rungs("seg_fp shifted", lambda f: shift_seg_fp(f, seg_fp["shift"]))
    rungs("class shares matched", lambda f: shift_books(f, books))
    summary = {"max_shift": prof.pseudo.max_class_shift, "books": {
        book: {"classes_shifted": len(s), "up": sum(v > 0 for v in s.values()),
               "largest": round(max(map(abs, s.values()), default=0.0), 2)}
        for book, s in books.items()}}
    return seg_fp, summary


def model_train_seconds(store: Any, run: str) -> dict[str, float]:
    """Each model's own training time (its metrics.json; summed over resumes), so the
    figures hold when a stage was resumed or skipped in this process."""
    seconds = {}
    for key in sorted(store.list(run)):
        name = key.removeprefix(f"{run}/").removesuffix("/metrics.json")
        if key.endswith("/metrics.json") and name.startswith(("detect/", "classify/")):
            seconds[name] = round(store.read_json(key).get("train_seconds", 0.0), 1)
    return seconds


def seg_fp_on_characters(labels: dict[str, list[Any]], truth: dict[str, list[Any]]
                         ) -> tuple[int, float]:
    """(kept seg_fp labels, the fraction of them on a true character at IoU >= 0.5).

    On unseen fonts the blend can be sure that a character is a false box; fine-tuning
    on such a label then teaches the classifiers to drop that font's characters."""
    from kzjobs.data.format import SEG_FP
    from kzjobs.detect.engine import label_by_iou

    false_boxes = {i: [b for b in boxes if b.code == SEG_FP] for i, boxes in labels.items()}
    n = sum(map(len, false_boxes.values()))
    on = sum(b.code != SEG_FP for i, boxes in false_boxes.items()
             for b in label_by_iou(boxes, truth.get(i, [])))
    return n, on / n if n else 0.0


def adaptation(store: Any, plan: Any, heldout: str) -> dict[str, Any]:
    """What pseudolabelling kept of the incoming pages and how right it was against the
    truth of the ``heldout`` books' pages; level 2's out-of-fold figures and its decision
    rule."""
    from kzjobs.data.dataset import Dataset
    from kzjobs.data.format import BOX_CODES, SEG_FP, boxes_to_points, read_annotations
    from kzjobs.method.metric import score
    from kzjobs.method.pseudo import default_report_key

    report = store.read_json(default_report_key(plan.keys.pseudo_labels))
    labels = read_annotations(store.read_bytes(plan.keys.pseudo_labels), allow=BOX_CODES)
    chars = {i: [b for b in boxes if b.code != SEG_FP] for i, boxes in labels.items()}
    truth = Dataset.open(heldout, store).annotations
    labels = {i: boxes for i, boxes in labels.items() if i in truth}  # this set's pages
    chars = {i: boxes for i, boxes in chars.items() if i in truth}
    # The kept characters scored against the truth: precision = how right the labels are.
    found = score({i: truth[i] for i in chars if i in truth}, boxes_to_points(chars))
    n_false, on_characters = seg_fp_on_characters(labels, truth)
    level2 = store.read_json(plan.keys.level2.report)
    return {
        "pseudolabels": {
            "rule": report["rule"]["rule"], "threshold": report["threshold"],
            "fraction_kept": round(report["fraction_kept"], 4), "kept": report["kept"],
            "boxes": report["boxes"], "seg_fp_kept": report["seg_fp_kept"],
            "accuracy_on_labelled_oof_pages": report["validation"],
            "heldout_precision_of_kept_characters": (
                round(found.precision, 4) if any(chars.values()) else None),
            "heldout_seg_fp_kept": n_false,
            "heldout_seg_fp_on_true_characters": (
                round(on_characters, 4) if n_false else None),
        },
        "level2_oof": {k: level2.get(k) for k in (
            "threshold", "level2_oof_f1", "blend_oof_f1", "candidate_recall")}
        | {"argmax_oof_f1": level2.get("level2_argmax", {}).get("f1")},
    }


def read_time_adaptation(store: Any, run: str, heldout: str, work: Path,
                         variants: dict[str, dict[str, dict[str, Any]]] | None = None
                         ) -> dict[str, Any]:
    """The held-out books read by ``kzjobs recognize`` (level 2 and all) three ways, on the
    same pages: with the class shifts the retraining run fitted for them (the bundle's,
    ``--no-adapt``), as books scanned after that run (a manifest without them), and with
    shifts fitted at read time (``--adapt``, which fits every book whatever the bundle
    carries); then with ``--adapt`` once per variant (``{name: profile overrides}`` of
    the bundle's profile, as ``kzjobs recognize --profile`` takes a YAML)."""
    import yaml

    from bench.shared import variant_profile
    from kzjobs.core.store import open_store
    from kzjobs.release.bundle import Bundle, copy_bundle
    from kzjobs.release.evaluate import evaluate_model

    bundle = Bundle.load(store.child(run))
    unseen = work / "model-unseen-books"
    copy_bundle(bundle, store.child(run), unseen)
    bundle.model_copy(update={"class_shifts": {}}).save(open_store(unseen))
    reads: dict[str, tuple[str, bool, str | None]] = {
        "the bundle's shifts": (run, False, None), "no shifts": (str(unseen), False, None),
        "no shifts, fitted at read time": (str(unseen), True, None)}
    for n, (name, overrides) in enumerate((variants or {}).items()):
        path = work / f"read-time-variant-{n}.yaml"
        path.write_text(yaml.safe_dump(variant_profile(bundle.profile_data, overrides)))
        reads[f"fitted at read time, {name}"] = (str(unseen), True, str(path))
    stamp = int(time.time())
    result = {}
    for name, (model, adapt, profile_path) in reads.items():
        started = time.perf_counter()
        scored = evaluate_model(model, heldout, store, out=f"bench-adapt/{stamp}-{len(result)}",
                                profile=profile_path, adapt=adapt)
        result[name] = {"f1": round(scored["f1"], 4),
                        "by_book": {b: round(c["f1"], 4) for b, c in scored["by_book"].items()},
                        "seconds": round(time.perf_counter() - started, 1)}
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="bench")
    parser.add_argument("--work", default="var/bench")
    # Default: one book per fold in each training font (x 32 pages; more hands at the same
    # pages judge the held-out fonts against more strokes).
    parser.add_argument("--train-books", type=int,
                        help="Default: one book per fold in each training font.")
    # 16 a book and 20 a held-out book: every class trains, data to bundle, in one sitting
    # on 2 cores (bench/RESULTS.md, 'Full-vocabulary bench of 2026-12-07 17:38 UTC'); more
    # pages read better at 400 classes (same file, 'Notes of 2026-12-07').
    parser.add_argument("--pages", type=int, default=16, help="Pages per training book.")
    parser.add_argument("--heldout-books", type=int, default=HELDOUT_BOOKS,
                        help="Books of each of the dev and test sets.")
    # The held-out pages are also the incoming collections pseudolabels adapt to; 5 pages a
    # book left the ladder's steps in the noise.
    parser.add_argument("--heldout-pages", type=int, default=20,
                        help="Pages of each dev and test book.")
    for name in ("train", "dev", "test"):
        parser.add_argument(f"--{name}-fonts", nargs="+",
                            help=f"Default: kzjobs.synth.fonts.split('{name}').")
    parser.add_argument("--vocabulary-size", type=int, default=VOCABULARY_SIZE or 0,
                        help="The most frequent characters the books use (default 0: every "
                        f"class; {QUICK_VOCABULARY_SIZE} is the quick run).")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="A stage's calls (folds, kinds) run this many at a time.")
    parser.add_argument("--speed-pages", type=int, nargs="*", default=[10, 100])
    parser.add_argument("--speed-shards", type=int, default=os.cpu_count() or 1,
                        help="Also read the largest speed set in this many side-by-side "
                        "shards (1: not).")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--out", default=str(RESULTS / "pipeline.json"))
    parser.add_argument("--evaluate-only", action="store_true",
                        help="Only judge the finished run in --work (no data made, no stage "
                        "run; their seconds come from the run's record).")
    return parser


def main() -> None:
    parser = build_parser()
    args = parser.parse_args()
    args.vocabulary_size = args.vocabulary_size or None
    from kzjobs.core.profile import load_profile
    from kzjobs.synth import fonts_across_folds

    try:
        args.fonts = split_fonts(args.train_fonts, args.dev_fonts, args.test_fonts)
    except ValueError as exc:
        parser.error(str(exc))
    # Every fold's models see every training font (and its OOF books too).
    args.font_cycle = fonts_across_folds(args.fonts["train"],
                                         load_profile(args.profile).data.n_folds)
    args.train_books = args.train_books or len(args.font_cycle)

    from kzjobs.core.store import open_store

    work = Path(args.work).resolve()
    store_uri, env = use_work(work)
    store = open_store(store_uri)
    plan = bench_plan(args.profile)
    timings = f"{plan.run}/bench-stage-seconds.json"
    result: dict[str, Any] = {
        "command": "python -m bench.pipeline " + " ".join(sys.argv[1:]),
        "machine": machine_info(),
        "profile": args.profile,
        "data": {"train_fonts": args.fonts["train"], "dev_fonts": args.fonts["dev"],
                 "test_fonts": args.fonts["test"],
                 "train_pages": args.train_books * args.pages,
                 "dev_pages": args.heldout_books * args.heldout_pages,
                 "test_pages": args.heldout_books * args.heldout_pages,
                 "vocabulary_size": args.vocabulary_size or "all"},
    }
    if args.evaluate_only:
        seconds = store.read_json(timings) if store.exists(timings) else {}
        if STAGES[-1][0] not in seconds:  # the last stage's time is written as it ends
            parser.error(f"--evaluate-only: no finished run in {work} (its stages: "
                         f"{sorted(seconds) or 'none'})")
    else:
        started = time.perf_counter()
        made = make_data(store, args)
        result["data"] |= {"generated": {k: v.get("pages") for k, v in made.items()},
                           "seconds": round(time.perf_counter() - started, 1)}
        seconds = run_stages(plan.args(), env, args.jobs, store, timings)
    result |= {"train_seconds": seconds,
               "train_minutes_total": round(sum(seconds.values()) / 60, 1),
               "model_train_seconds": model_train_seconds(store, plan.run)}
    evaluate(result, store_uri, plan, work, env, args)
    print(json.dumps({"test": result["test"]["quality"]["ladder"],
                      "train_minutes_total": result["train_minutes_total"]}, indent=2))


def evaluate(result: dict[str, Any], store_uri: str, plan: Any, work: Path,
             env: dict[str, str], args: argparse.Namespace) -> None:
    """The finished run judged step by step, each step's figures saved to ``args.out`` as
    it ends: a run stopped during its evaluation keeps what it measured, and the file names
    the steps still owed (``not_measured``). Dev first (its choices: the best single
    model), then the test books' quality and speed, Tesseract last. Each figure sits under
    the set it was measured on (``result["dev"]``, ``result["test"]``)."""
    from bench.scale import recognize_speed
    from bench.tesseract import run_tesseract_bench
    from kzjobs.core.store import open_store
    from kzjobs.data.dataset import Dataset
    from kzjobs.release.bundle import Bundle, copy_bundle

    dev, test = SETS["dev"][0], SETS["test"][0]
    store = open_store(store_uri)
    model_dir = work / "model"  # the final blend, for `kzjobs recognize --model var/bench/model`
    copy_bundle(Bundle.load(store.child(plan.run)), store.child(plan.run), model_dir)
    result["bundle"] = str(model_dir)

    def speed() -> list[dict[str, Any]]:
        rows = [recognize_speed(store_uri, plan.run, test, n, env) for n in args.speed_pages]
        if args.speed_pages and args.speed_shards > 1:
            rows.append(recognize_speed(store_uri, plan.run, test, max(args.speed_pages),
                                        env, shards=args.speed_shards))
        return rows

    def tesseract() -> dict[str, Any]:
        pages = Dataset.open(test, store)
        figures = run_tesseract_bench(pages, pages.image_ids())
        return {k: figures[k] for k in figures if k != "pages_detail"}

    def test_quality() -> dict[str, Any]:  # the best single model is the dev books' choice
        chosen = result["dev"]["quality"]["ladder"]["best single model"]["model"]
        return ablation(store, plan.run, test, args.profile, best=chosen)

    # Classifiers that read with int8 trunks are read once more with float ones: what
    # int8 costs in F1, on the same pages.
    from kzjobs.core.profile import load_profile

    float_read = ({"float classifier trunks": {"classify": {"int8_trunk": False}}}
                  if load_profile(args.profile).classify.int8_trunk else {})
    steps: dict[str, Callable[[], Any]] = {
        "dev/quality": lambda: ablation(store, plan.run, dev, args.profile),
        "dev/adaptation": lambda: adaptation(store, plan, dev),
        "dev/read_time_adaptation": lambda: read_time_adaptation(store, plan.run, dev, work,
                                                                 float_read),
        "test/quality": test_quality,
        "test/adaptation": lambda: adaptation(store, plan, test),
        "test/recognize_speed": speed,
        "test/read_time_adaptation": lambda: read_time_adaptation(store, plan.run, test, work,
                                                                  float_read),
        "test/tesseract": tesseract,  # last: it does not depend on the run's models
    }
    run_steps(result, steps, Path(args.out))
    drawn = draw_ladder(result, Path(args.out).with_name("ladder.png"))
    print(f"== the ladder drawn: {drawn}", file=sys.stderr, flush=True)


def run_steps(result: dict[str, Any], steps: dict[str, Callable[[], Any]], out: Path) -> None:
    """Each step's figures go into ``result`` under its name (``set/name``: under
    ``result[set][name]``), and ``result`` is saved to ``out`` before the first step and
    after each one, with the steps still owed listed under ``not_measured`` (dropped once
    all are done)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    owed = list(steps)
    while True:
        out.write_text(json.dumps(result | ({"not_measured": owed} if owed else {}),
                                  indent=2, ensure_ascii=False))
        if not owed:
            return
        print(f"== evaluate: {owed[0]}", file=sys.stderr, flush=True)
        *within, name = owed[0].split("/")
        place = result
        for key in within:
            place = place.setdefault(key, {})
        place[name] = steps[owed[0]]()
        owed = owed[1:]


if __name__ == "__main__":
    main()
