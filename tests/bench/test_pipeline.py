"""bench.pipeline: its stages run the DAG's own kzjobs calls, and their wall times add up
over the processes of a stopped and resumed run."""

from __future__ import annotations

import os

import pytest

from bench.pipeline import STAGES, run_stages
from kzjobs.core.store import open_store
from kzjobs.orchestrate.plan import RetrainPlan
from kzjobs.orchestrate.runner import JobFailed
from kzjobs.synth import generate

TIMINGS = "timings/bench-stage-seconds.json"


@pytest.fixture
def work(tmp_path):
    store = open_store(str(tmp_path / "store"))
    generate(store.child("datasets/train"), books=2, pages_per_book=1, seed=3,
             fonts=["ipaex-mincho"])
    env = {**os.environ, "KZ_STORE": str(tmp_path / "store"), "KZ_HOME": str(tmp_path),
           "GX_ANALYTICS_ENABLED": "false"}
    plan = RetrainPlan.build({"profile": "tiny", "dataset": "datasets/train",
                              "heldout": "datasets/heldout"}, "run")
    # Only the two cheap stages: the rest have no calls, as a plan without them would.
    stages = {stage: plan.args()[stage] if stage in ("validate", "folds") else []
              for stage, _command in STAGES}
    return store, env, plan, stages


def test_each_stage_runs_its_calls_and_its_time_adds_up_over_resumed_runs(work):
    store, env, plan, stages = work
    first = run_stages(stages, env, 1, store, TIMINGS)
    assert set(first) == {stage for stage, _ in STAGES}
    assert store.exists(plan.keys.folds)  # the real job ran and wrote its output
    assert first["validate"] > 0 and first["folds"] > 0
    assert store.read_json(TIMINGS) == first

    second = run_stages(stages, env, 1, store, TIMINGS)  # a resumed process adds its time
    for stage in ("validate", "folds"):
        assert second[stage] > first[stage]
    assert store.read_json(TIMINGS) == second


def test_the_bench_trains_with_every_stage_of_the_plan_before_its_evaluation(work):
    """The bench runs each training stage the DAG runs, starting weights first."""
    _store, _env, plan, _stages = work
    names = [stage for stage, _command in STAGES]
    assert set(names) == set(plan.args()) - {"plan", "evaluate", "register"}
    assert names[0] == "pretrain" and names[-1] == "bundle"
    assert names.index("merge_oof") < names.index("classify_train")  # it reads merged boxes


def test_a_failing_call_stops_the_run_and_keeps_the_times_of_the_stages_before(work):
    store, env, _plan, stages = work
    stages["folds"] = ["datasets/missing", "--out", "run/folds.json", "--profile", "tiny"]
    with pytest.raises(JobFailed, match=r"datasets/missing: 0 book\(s\) for 2 folds"):
        run_stages(stages, env, 1, store, TIMINGS)
    before = [stage for stage, _command in STAGES]
    assert set(store.read_json(TIMINGS)) == set(before[:before.index("folds")])


def test_kept_seg_fp_labels_are_judged_by_their_overlap_with_true_characters():
    from bench.pipeline import seg_fp_on_characters
    from kzjobs.data.format import SEG_FP, Box

    truth = {"a_1": [Box("U+3042", 10, 10, 20, 20), Box("U+3044", 50, 10, 20, 20)]}
    labels = {"a_1": [Box(SEG_FP, 11, 11, 20, 20),  # on a character: a wrong label
                      Box(SEG_FP, 100, 100, 20, 20),  # on nothing: right
                      Box("U+3044", 50, 10, 20, 20)],  # a character label: not counted
              "b_1": [Box(SEG_FP, 0, 0, 5, 5)]}  # a page without truth: right
    assert seg_fp_on_characters(labels, truth) == (3, 1 / 3)
    assert seg_fp_on_characters({"a_1": labels["a_1"][2:]}, truth) == (0, 0.0)


def test_read_time_adaptation_reads_the_books_as_seen_as_unseen_and_adapted(tmp_path):
    """Three recognitions of the same labelled pages: the bundle as it is, a manifest
    without its book shifts, and that manifest with shifts fitted at read time."""
    from bench.pipeline import read_time_adaptation
    from bench.workload import write_seeded_bundle
    from kzjobs.release.bundle import Bundle

    store = open_store(str(tmp_path / "store"))
    generate(store.child("heldout"), books=1, pages_per_book=2, seed=3, fonts=["ipaex-mincho"])
    write_seeded_bundle(store, "run")
    book = store.list("heldout/images")[0].rsplit("/", 1)[-1].split("_")[0]
    root = store.child("run")
    Bundle.load(root).model_copy(update={"class_shifts": {book: {"U+3044": 3.0}},
                                         "class_shares": {"U+3042": 0.5, "U+3044": 0.5}}
                                 ).save(root)
    result = read_time_adaptation(store, "run", "heldout", tmp_path, {
        "no shift allowed": {"pseudo": {"max_class_shift": 0.0}}})
    assert list(result) == ["the bundle's shifts", "no shifts", "no shifts, fitted at read time",
                            "fitted at read time, no shift allowed"]
    # A variant is the bundle's profile with its overrides (read by recognize --profile):
    # adapting with no shift allowed reads the pages as they are.
    outs = {k.split("/")[1][-2:]: store.read_bytes(k) for k in store.list("bench-adapt")
            if k.endswith("/submission.csv")}
    assert outs["-3"] == outs["-1"] != outs["-2"]
    assert all(0.0 <= r["f1"] <= 1.0 and list(r["by_book"]) == [book] for r in result.values())
    assert Bundle.load(open_store(tmp_path / "model-unseen-books")).class_shifts == {}
    adapted = [k for k in store.list("bench-adapt") if "/adaptation/" in k]
    assert sorted(k.split("/")[1][-2:] for k in adapted) == ["-2", "-3"]  # the adapted reads


def test_each_evaluation_step_is_saved_as_it_ends_and_a_stopped_one_is_named_owed(tmp_path):
    import json

    from bench.pipeline import run_steps

    out = tmp_path / "results" / "pipeline.json"

    def stopped() -> None:
        saved = json.loads(out.read_text())  # what a stop here leaves behind
        assert saved == {"run": "r", "quality": 0.9, "not_measured": ["speed", "tesseract"]}
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_steps({"run": "r"}, {"quality": lambda: 0.9, "speed": stopped,
                                 "tesseract": lambda: 0.2}, out)
    assert json.loads(out.read_text())["not_measured"] == ["speed", "tesseract"]

    result = {"run": "r"}
    run_steps(result, {"quality": lambda: 0.9, "speed": lambda: [1.3]}, out)
    assert json.loads(out.read_text()) == result == {"run": "r", "quality": 0.9,
                                                      "speed": [1.3]}


def test_steps_named_set_slash_step_land_under_their_set(tmp_path):
    import json

    from bench.pipeline import run_steps

    out = tmp_path / "pipeline.json"
    result = {"run": "r"}
    run_steps(result, {"dev/quality": lambda: 0.9, "test/quality": lambda: 0.8,
                       "test/speed": lambda: [1.0]}, out)
    assert json.loads(out.read_text()) == result == {
        "run": "r", "dev": {"quality": 0.9}, "test": {"quality": 0.8, "speed": [1.0]}}


def test_the_bench_reads_every_class_by_default_and_400_on_request():
    from bench.pipeline import VOCABULARY_SIZE, build_parser

    assert VOCABULARY_SIZE is None
    assert build_parser().parse_args([]).vocabulary_size == 0  # 0: every class
    assert build_parser().parse_args(["--vocabulary-size", "400"]).vocabulary_size == 400


def test_dev_and_test_books_are_in_fonts_of_their_own(tmp_path):
    """make_data writes train, dev and test books in the split's fonts, test texts from
    a seed of their own, and the dev and test pages unlabelled as incoming collections."""
    import argparse

    from bench.pipeline import SETS, bench_plan, make_data, split_fonts
    from kzjobs.synth.fonts import split

    fonts = split_fonts(None, None, None)
    assert fonts == {name: list(split(name)) for name in ("train", "dev", "test")}
    with pytest.raises(ValueError, match="test fonts must not be train fonts"):
        split_fonts(None, None, [*split("test"), split("train")[0]])
    with pytest.raises(ValueError, match="test fonts must not be dev fonts"):
        split_fonts(None, None, list(split("dev")))

    store = open_store(str(tmp_path / "store"))
    args = argparse.Namespace(train_books=1, pages=1, seed=7, font_cycle=fonts["train"][:1],
                              vocabulary_size=400, heldout_books=2, heldout_pages=1,
                              fonts=fonts)
    made = make_data(store, args)
    assert set(made) == {"train", "dev", "test"}
    used = {name: {m["font"] for m in store.read_json(f"{key}/books.json").values()}
            for name, key in [("train", "datasets/train")]
            + [(n, labelled) for n, (labelled, _incoming, _offset) in SETS.items()]}
    assert used["dev"] == set(split("dev")) and used["test"] == set(split("test"))
    assert not used["train"] & (used["dev"] | used["test"])
    topics = {name: {m["text"]["topic"] for m in store.read_json(f"{key}/books.json").values()}
              for name, (key, _incoming, _offset) in SETS.items()}
    assert not topics["dev"] & topics["test"]  # texts drawn independently
    for _labelled, incoming, _offset in SETS.values():
        assert len(store.list(f"{incoming}/images")) == 2
        assert not store.exists(f"{incoming}/train.csv")
    assert bench_plan("tiny").incoming == [incoming for _l, incoming, _o in SETS.values()]
    assert bench_plan("tiny").heldout == SETS["dev"][0]  # the run chooses on dev books
    assert make_data(store, args) == {}  # made once


def test_the_component_benches_train_on_training_fonts_and_judge_on_dev_fonts():
    import bench.classify
    import bench.detect
    from kzjobs.synth.fonts import split

    for module in (bench.detect, bench.classify):
        assert set(module.TRAIN_FONTS) <= set(split("train"))
        assert tuple(module.TEST_FONTS) == split("dev")
