"""The whole system through Airflow on the embedded default, as ``make demo`` runs it:
kz_retrain -> kz_promote -> kz_recognize with the local launcher, on the tiny profile
cut to one or two epochs a stage. This test is about the wiring; that the tiny profile
learns is asserted by the tests of each job."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kzjobs.core.profile import load_profile
from kzjobs.core.settings import get_settings


@pytest.fixture
def short_profile(tmp_path: Path) -> str:
    """The tiny profile with the fewest epochs that still train every stage."""
    profile = load_profile("tiny").model_copy(update={"name": "tiny-short"}, deep=True)
    profile.detect.epochs = 2
    profile.classify.epochs = 2
    profile.classify.finetune_epochs = 1
    path = tmp_path / "tiny-short.yaml"
    path.write_text(yaml.safe_dump(profile.model_dump(mode="json", by_alias=True)))
    return str(path)


@pytest.mark.slow
def test_retrain_promote_recognize_through_airflow(short_profile: str):
    from kzjobs.core.store import open_store
    from kzjobs.data.format import read_submission
    from kzjobs.demo import demo, report
    from kzjobs.release.registry import get_version

    # Books cycle through the fonts: each fold trains and validates on both.
    fonts = ["kouzan-sousyo", "kouzan-sousyo", "kouzan-gyousyo", "kouzan-gyousyo"]
    said: list[str] = []
    out = demo(profile=short_profile, books=4, pages_per_book=2, heldout_books=2, incoming_books=1,
               heldout_pages_per_book=2, shards=2, fonts=fonts, log=said.append)

    # kz_retrain registered its blend as the candidate, with its held-out figures as tags.
    version = out["registered"]["version"]
    assert version == 1
    tags = get_version(version).tags
    assert tags["profile"] == "tiny-short" and tags["heldout"] == "datasets/heldout"
    assert set(out["heldout_f1_by_book"]) == {
        k.removeprefix("f1.book.") for k in tags if k.startswith("f1.book.")}
    # The figure printed is the one the registry holds and promotion compares.
    assert float(tags["f1"]) == out["heldout_f1"]
    assert 0.0 <= out["heldout_detection_f1"] <= 1.0

    # The adaptation's seg_fp shift (tiny fits it on the incoming batch) is the bundle's.
    from kzjobs.core.keys import RunKeys
    from kzjobs.release.bundle import Bundle

    pseudo_report = RunKeys("").pseudo_report

    runs = open_store(get_settings().store_uri).child("runs/retrain")
    (report_key,) = [k for k in runs.list("") if k.endswith(pseudo_report)]
    shift = runs.read_json(report_key)["seg_fp_shift"]
    assert shift["rule"] == "fit" and shift["rates"]["oof"] is not None
    run = runs.child(report_key.removesuffix("/" + pseudo_report))
    assert Bundle.load(run).seg_fp_shift == shift["shift"]

    # kz_promote made the first version the champion, and said why.
    assert out["promotion"]["decision"] == "promoted"
    assert int(get_version("champion").version) == version

    # kz_recognize read every incoming page with the champion, in two shards, and merged.
    store = open_store(get_settings().store_uri)
    pages = {k.rsplit("/", 1)[-1].rsplit(".", 1)[0] for k in store.list("incoming/batch-1/images")}
    assert out["recognized"]["recognized"] + out["recognized"]["quarantined"] == len(pages)
    submission = read_submission(store.read_bytes("predictions/incoming-batch-1/submission.csv"))
    assert set(submission) == pages
    assert out["review"].endswith("review/index.html")

    # While it ran, the demo said each task as it ended, from the DAG runs' own logs.
    for dag_id, stages in out["stages"].items():
        for task in stages:
            assert any(f"] {dag_id} > {task} done in " in line for line in said), task
    # The profile starts from no stored weights: pretrain had nothing to do, and says so.
    assert out["skipped"]["kz_retrain"] == ["pretrain"]
    assert "pretrain" not in out["stages"]["kz_retrain"]

    # What a person reads at the end: every stage with its time, the figures, the places.
    text = report(out, 60.0)
    retrain = out["stages"]["kz_retrain"]
    assert {"detect_train[0]", "detect_train[1]", "level2", "evaluate", "register"} <= set(retrain)
    assert retrain["detect_train[0]"] > 0  # durations come from the task instances
    assert "recognize[1]" in out["stages"]["kz_recognize"]
    for dag_id in ("kz_retrain", "kz_promote", "kz_recognize"):
        assert dag_id in text
    assert any(line.split() == ["pretrain", "skipped"] for line in text.splitlines())
    assert f"held-out F1 (competition metric, test fonts): {out['heldout_f1']:.3f}" in text
    assert f"detection only (boxes, any code): {out['heldout_detection_f1']:.3f}" in text
    assert f"(profile {out['profile']}, {out['train_pages']} training pages;" in text
    assert out["review"] in text and out["submission"] in text
    assert f"--backend-store-uri {get_settings().tracking_uri}" in text


@pytest.mark.parametrize("heldout_fonts", ["train", "dev"])
def test_the_held_out_books_are_never_in_a_training_font(heldout_fonts: str):
    from kzjobs.demo import demo

    with pytest.raises(ValueError, match=r"test or dev|must not be dev fonts"):
        demo(books=1, pages_per_book=1, fonts=["kouzan-gyousyo"], heldout_fonts=heldout_fonts)


# Lines as dag.test() writes them (Airflow 3.3), the job's own line repeated by the local
# operator in between.
_OP = "[airflow.task.operators.kzjobs.operators.local.KzLocalJobOperator]"
_DAG = "[airflow.sdk.definitions.dag]"
DAG_TEST_LOG = [
    f"2026-12-07T02:54:21.215882Z [info     ] [DAG TEST] starting task_id=detect_train "
    f"map_index=0 {_DAG} loc=dag.py:1501",
    f"2026-12-07T02:54:21.314417Z [info     ] kzjobs detect train --fold 0 {_OP} loc=local.py:40",
    "2026-12-07T02:55:42.657000Z [info     ] 2026-12-07 02:55:42,657 INFO kzjobs.detect.jobs: "
    f"fold 0 epoch 1/4: loss 0.9379 in 80 s {_OP} loc=launch.py:265",
    f"2026-12-07T02:55:42.700000Z [info     ]  {_OP} loc=launch.py:265",
    "2026-12-07T02:56:36.834664Z [info     ] ::group::Post Execute          [task] "
    "loc=task_runner.py:1580",
    f"2026-12-07T02:56:36.871386Z [info     ] [DAG TEST] end task task_id=detect_train "
    f"map_index=0 {_DAG} loc=dag.py:1563",
    f"2026-12-07T02:56:37.000000Z [info     ] [DAG TEST] starting task_id=evaluate "
    f"map_index=-1 {_DAG} loc=dag.py:1501",
]


def test_the_demo_says_which_task_runs_and_what_its_job_last_said():
    from kzjobs.demo import Watch

    said: list[str] = []
    watch = Watch(said.append, live=False, heartbeat=3600)
    feed = watch.dag_run("kz_retrain")
    lines = DAG_TEST_LOG
    for line in lines[:4]:
        feed(line)
    # The job's latest line, without Airflow's and the job's logging prefixes.
    assert (watch.task, watch.detail) == ("detect_train[0]",
                                          "fold 0 epoch 1/4: loss 0.9379 in 80 s")
    for line in lines[4:]:
        feed(line)
    assert [name for name, _ in watch.done] == ["kz_retrain > detect_train[0]"]
    assert len(said) == 1 and "] kz_retrain > detect_train[0] done in " in said[0]
    assert (watch.task, watch.detail) == ("evaluate", "")

    # Off a terminal, a task that runs long is named again every `heartbeat` seconds.
    watch.heartbeat = 0
    watch._show(watch.last_said + 1)
    assert "] kz_retrain > evaluate running for " in said[-1]
