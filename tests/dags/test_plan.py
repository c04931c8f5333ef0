"""The plans the DAGs run: every job's inputs are the keys an earlier job wrote."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from kzjobs.core.keys import safe_run_id
from kzjobs.core.store import validate_key
from kzjobs.orchestrate.plan import (
    RecognizePlan,
    RetrainPlan,
    collection_from,
    promote_args,
)

RUN_ID = "scheduled__2026-03-01T00:00:00+00:00"


def _opt(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


def test_run_ids_become_safe_keys():
    for run_id in (RUN_ID, "manual__2026-01-01T10:00:00.123+00:00", "asset_triggered__x/y"):
        assert validate_key(f"runs/{safe_run_id(run_id)}")


def test_retrain_plan_chains_keys_from_job_to_job():
    plan = RetrainPlan.build({"profile": "tiny", "dataset": "datasets/train",
                              "heldout": "datasets/heldout",
                              "incoming": ["incoming/a", "incoming/b"]}, RUN_ID)
    a = plan.args()
    assert plan.n_folds == 2 and plan.kinds == ["resnet18"]  # from the tiny profile
    folds_key = _opt(a["folds"], "--out")
    assert all(_opt(x, "--folds") == folds_key for x in a["detect_train"] + a["detect_oof"])
    models = [f"{_opt(x, '--out')}/model.pt" for x in a["detect_train"]]
    assert [_opt(x, "--model") for x in a["detect_oof"]] == models
    oof = [_opt(x, "--out") for x in a["detect_oof"]]
    assert a["merge_oof"][: len(oof)] == oof  # every fold's OOF boxes are joined...
    joined = _opt(a["merge_oof"], "--out")
    assert all(_opt(x, "--boxes") == joined for x in a["classify_train"])  # ...for the classifiers
    assert not joined.startswith(f"{plan.run}/detect/")  # level 2 reads detect/ as truth
    assert len(a["classify_train"]) == 2 and len(a["classify_incoming"]) == 4
    boxes = {_opt(x, "--out") for x in a["detect_incoming"]}
    assert {_opt(x, "--boxes") for x in a["classify_incoming"]} == boxes
    classifiers = {f"{_opt(x, '--out')}/model.pt" for x in a["classify_train"]}
    assert {_opt(x, "--model") for x in a["classify_incoming"]} == classifiers
    preds = [_opt(x, "--out") for x in a["classify_incoming"]]
    prefixes = [a["pseudolabel"][i + 1] for i, v in enumerate(a["pseudolabel"]) if v == "--preds"]
    assert all(any(p.startswith(f"{q}/") for q in prefixes) for p in preds)
    assert len(a["finetune"]) == 2
    assert all(_opt(x, "--pseudo") == _opt(a["pseudolabel"], "--out") for x in a["finetune"])
    # Fine-tuning starts from its base classifier and is named as a kind of its own.
    assert {_opt(x, "--init") for x in a["finetune"]} == classifiers
    assert {_opt(x, "--name") for x in a["finetune"]} == {
        f"{_opt(x, '--kind')}-ft" for x in a["finetune"]}
    # Level 2 (and so the bundle) stacks the fine-tuned classifiers, not their bases too.
    stacked = [a["level2"][i + 1] for i, v in enumerate(a["level2"]) if v == "--kind"]
    assert stacked == sorted({_opt(x, "--name") for x in a["finetune"]}) == ["resnet18-ft"]
    assert _opt(a["evaluate"], "--model") == _opt(a["register"], "--bundle") == \
        _opt(a["bundle"], "--run") == plan.run
    assert _opt(a["evaluate"], "--out") == _opt(a["register"], "--evaluation")
    assert _opt(a["evaluate"], "--dataset") == "datasets/heldout"
    every = [a["validate"], a["folds"], a["merge_oof"], a["pseudolabel"], a["level2"],
             a["bundle"], a["evaluate"], a["register"], *a["detect_train"], *a["finetune"]]
    assert all(_opt(x, "--profile") == "tiny" for x in every)


def test_retrain_without_incoming_has_nothing_to_adapt():
    a = RetrainPlan.build({"profile": "tiny", "dataset": "d", "heldout": "h"}, RUN_ID).args()
    assert a["detect_incoming"] == a["classify_incoming"] == a["finetune"] == []
    assert [a["level2"][i + 1] for i, v in enumerate(a["level2"]) if v == "--kind"] == [
        "resnet18"]


def test_without_fine_tuning_the_incoming_pages_still_fit_the_shifts(tmp_path):
    """pseudo.finetune off: pseudolabels are chosen (and the seg_fp shift fitted), but no
    classifier is fine-tuned and level 2 stacks the first ones."""
    import yaml

    from kzjobs.core.profile import load_profile

    data = load_profile("tiny").model_dump(mode="json", by_alias=True)
    data["pseudo"]["finetune"] = False
    profile = tmp_path / "no-finetune.yaml"
    profile.write_text(yaml.safe_dump(data))
    a = RetrainPlan.build({"profile": str(profile), "dataset": "d", "heldout": "h",
                           "incoming": ["incoming/a"]}, RUN_ID).args()
    assert a["finetune"] == []
    assert len(a["classify_incoming"]) == 2 and a["pseudolabel"]
    assert [a["level2"][i + 1] for i, v in enumerate(a["level2"]) if v == "--kind"] == [
        "resnet18"]


def test_recognize_plan_shards_and_validation():
    plan = RecognizePlan.build({"profile": "tiny", "shards": 3}, RUN_ID, "incoming/batch-7")
    a = plan.args()
    assert _opt(a["recognize"][0], "--model") == "models:/kz-recognizer@champion"
    assert [_opt(x, "--shard") for x in a["recognize"]] == ["0/3", "1/3", "2/3"]
    assert {_opt(x, "--batch") for x in a["recognize"]} == {"8"}
    batched = RecognizePlan.build({"profile": "tiny", "batch": 2}, RUN_ID, "incoming/batch-7")
    assert _opt(batched.args()["recognize"][0], "--batch") == "2"
    # Adapting to new books: the model's own setting unless the run says.
    assert not {"--adapt", "--no-adapt"} & set(a["recognize"][0])
    for adapt, flag in ((True, "--adapt"), (False, "--no-adapt")):
        told = RecognizePlan.build({"profile": "tiny", "adapt": adapt}, RUN_ID, "incoming/b")
        assert all(flag in x for x in told.args()["recognize"])
    validation = _opt(a["validate"], "--out")
    assert all(_opt(x, "--validation") == validation for x in [*a["recognize"], a["merge"]])
    assert {_opt(x, "--out") for x in [*a["recognize"], a["merge"]]} == {
        "predictions/incoming-batch-7"}
    # The blend brings its own settings, and merging reads only results.
    assert "--profile" not in [*a["recognize"][0], *a["merge"]]
    with pytest.raises(ValueError, match="no collection"):
        RecognizePlan.build({"profile": "tiny"}, RUN_ID, "")


def test_recognize_plan_formats_go_to_the_merge_only():
    plain = RecognizePlan.build({"profile": "tiny"}, RUN_ID, "incoming/b").args()
    assert "--formats" not in plain["merge"] and "--base-url" not in plain["merge"]
    plan = RecognizePlan.build({"profile": "tiny", "formats": ["pdf", "alto"],
                                "base_url": "https://example.org/out"}, RUN_ID, "incoming/b")
    a = plan.args()
    assert _opt(a["merge"], "--formats") == "alto,pdf"  # known names, in FORMATS order
    assert _opt(a["merge"], "--base-url") == "https://example.org/out"
    # A one-shard recognize merges too: written there, the PDF would be drawn twice.
    assert all("--formats" not in x for x in a["recognize"])
    with pytest.raises(ValueError, match="unknown format"):
        RecognizePlan.build({"profile": "tiny", "formats": ["hocr"]}, RUN_ID, "incoming/b")


def test_the_collection_comes_from_the_param_or_the_newest_asset_event():
    from airflow.sdk.api.datamodels._generated import AssetReferenceAssetEventDagRun
    from airflow.sdk.execution_time.comms import AssetEventDagRunReferenceResult
    from airflow.sdk.execution_time.context import TriggeringAssetEventsAccessor

    now = datetime(2026, 3, 1, tzinfo=UTC)

    def event(extra: dict, minutes: int) -> AssetEventDagRunReferenceResult:
        return AssetEventDagRunReferenceResult(
            asset=AssetReferenceAssetEventDagRun(name="kz_incoming",
                                                 uri="kzjobs://store/incoming", extra={}),
            extra=extra, source_task_id=None, source_dag_id=None, source_run_id=None,
            source_map_index=None, source_aliases=[], timestamp=now + timedelta(minutes=minutes),
        )

    events = TriggeringAssetEventsAccessor.build([
        event({"collection": "incoming/old"}, 0), event({"collection": "incoming/new"}, 5),
        event({}, 9),
    ])
    assert collection_from({}, events) == "incoming/new"
    assert collection_from({"collection": "incoming/x"}, events) == "incoming/x"
    assert collection_from({}, None) == ""


def test_promote_args():
    assert promote_args({"profile": "demo"}) == ["--version", "candidate", "--profile", "demo"]
    assert promote_args({"profile": "demo", "version": "4", "heldout": "h"}) == [
        "--version", "4", "--heldout", "h", "--profile", "demo"]
