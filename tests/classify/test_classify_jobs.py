"""Job mechanics: resume after a crash, quarantine of bad pages, predictions by key, CLI."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

import kzjobs.classify.engine as engine
import kzjobs.classify.predict as predict
from kzjobs.classify.jobs import ClassifyPredictJob, ClassifyTrainJob
from kzjobs.classify.predict import read_table, to_points
from kzjobs.cli import app
from kzjobs.data.format import SEG_FP, read_annotations, write_annotations
from tests.classify.conftest import MECHANICS_PROFILE

pytestmark = pytest.mark.slow  # trains small models


def _train(data, profile, **kw) -> ClassifyTrainJob:
    return ClassifyTrainJob(store_uri=data.root, profile_name=profile, dataset=data.dataset,
                            folds=data.folds, boxes=data.boxes, kind="resnet18", fold=0,
                            out="runs/m/classify/resnet18/fold0", progress=False, **kw)


def test_training_resumes_after_a_crash_and_skips_unreadable_pages(
    small_data, mechanics_profile, monkeypatch, tmp_path
):
    real = engine.train_one_epoch
    calls = []

    def crash_in_second_epoch(*args, **kwargs):
        calls.append(kwargs["epoch"].index)
        if kwargs["epoch"].index == 1:
            raise RuntimeError("power cut")
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "train_one_epoch", crash_in_second_epoch)
    with pytest.raises(RuntimeError, match="power cut"):
        _train(small_data, mechanics_profile).run()
    store = small_data.store
    prefix = "runs/m/classify/resnet18/fold0"
    assert store.exists(f"{prefix}/checkpoint.pt") and not store.exists(f"{prefix}/model.pt")

    # The checkpoint resumes only under the settings it was made with: another learning
    # rate is refused by name, before any training, and the checkpoint is kept.
    other = tmp_path / "other-lr.yaml"
    other.write_text(yaml.safe_dump(
        MECHANICS_PROFILE | {"classify": MECHANICS_PROFILE["classify"] | {"lr": 0.02}}))
    calls.clear()
    with pytest.raises(ValueError, match=r"changed: \['lr'\]"):
        _train(small_data, str(other)).run()
    assert calls == [] and store.exists(f"{prefix}/checkpoint.pt")

    calls.clear()
    monkeypatch.setattr(engine, "train_one_epoch",
                        lambda *a, **k: calls.append(k["epoch"].index) or real(*a, **k))
    summary = _train(small_data, mechanics_profile).run()
    assert calls == [1]  # only the epoch that was lost
    assert [h["epoch"] for h in summary["history"]] == [0, 1]
    assert store.exists(f"{prefix}/model.pt") and not store.exists(f"{prefix}/checkpoint.pt")
    assert list(summary["unreadable_train_pages"]) == ["syndB_002"]
    assert "cannot decode image" in summary["unreadable_train_pages"]["syndB_002"]
    assert summary["valid_pages"] == 1 and summary["valid"]["boxes"] > 0

    from mlflow import MlflowClient

    from kzjobs.core.settings import get_settings

    client = MlflowClient(tracking_uri=get_settings().tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("kz-classify").experiment_id])
    assert len(runs) == 1  # the resumed job logged into the run it started
    assert len(client.get_metric_history(runs[0].info.run_id, "train_loss")) == 2


def test_prediction_quarantines_bad_pages_and_a_rerun_does_only_missing_pages(
    tiny_data, tiny_run, monkeypatch
):
    store = tiny_data.store
    boxes = read_annotations(store.read_bytes(tiny_data.boxes), allow=(SEG_FP,))
    pages = ["syndA_000", "syndA_001", "syndA_002"]
    collection = {p: boxes[p] for p in pages}
    collection["syndZ_000"] = boxes["syndA_003"]  # listed, but no image
    collection["syndZ_001"] = boxes["syndA_003"]  # an image that is not one
    for p in pages:
        store.write_bytes(f"incoming/images/{p}.jpg", store.read_bytes(f"ds/images/{p}.jpg"))
    store.write_bytes("incoming/images/syndZ_001.jpg", b"GIF89a broken")
    store.write_bytes("incoming/boxes.csv", write_annotations(collection))

    real = predict.predict_logits
    done = []

    def crash_on_third_page(model, image, page_boxes, *args, **kw):
        if len(done) == 2:
            raise RuntimeError("preempted")
        done.append(len(page_boxes))
        return real(model, image, page_boxes, *args, **kw)

    job = ClassifyPredictJob(store_uri=tiny_data.root, profile_name="tiny", model=tiny_run["model"],
                             dataset="incoming", boxes="incoming/boxes.csv", out="preds/a.parquet",
                             progress=False)
    monkeypatch.setattr(predict, "predict_logits", crash_on_third_page)
    with pytest.raises(RuntimeError, match="preempted"):
        job.run()
    assert len(store.list("preds/a.parquet.parts")) == 2

    done.clear()
    monkeypatch.setattr(predict, "predict_logits",
                        lambda model, image, b, *args, **kw: done.append(len(b))
                        or real(model, image, b, *args, **kw))
    summary = job.run()
    assert len(done) == 1  # the two finished pages were not predicted again
    reasons = {q["item"]: q["reason"] for q in summary["quarantined"]}
    assert set(reasons) == {"syndZ_000", "syndZ_001"}
    assert "no image" in reasons["syndZ_000"] and "decode" in reasons["syndZ_001"]
    assert json.loads(store.read_text("preds/a.quarantine.json")) == summary["quarantined"]
    assert store.list("preds/a.parquet.parts") == []

    table = read_table(store.read_bytes("preds/a.parquet"))
    assert summary["boxes"] == table.num_rows == sum(len(collection[p]) for p in pages)
    # The same boxes were predicted as in the OOF run (joined by key, not by position).
    # Training wrote the OOF under autocast in other batches; on a CPU with bf16 units
    # (AMX) the weak tiny model's near-ties flip, so only clear winners must agree.
    oof = {(r["image_id"], r["box_id"]): r
           for r in read_table(store.read_bytes(tiny_run["oof"])).to_pylist()}
    again = {(r["image_id"], r["box_id"]): r["classes"][0] for r in table.to_pylist()}
    same = {k: oof[k]["classes"][0] == v for k, v in again.items()}
    sure = [k for k in again if oof[k]["logits"][0] - oof[k]["logits"][1] >= 1.0]
    assert len(sure) >= 0.25 * len(again)  # here: 164 of 299 on an AMD EPYC
    assert sum(same[k] for k in sure) >= 0.99 * len(sure)
    assert sum(same.values()) >= 0.95 * len(again)
    points = to_points(table)
    assert sum(map(len, points.values())) == sum(v != SEG_FP for v in again.values())


def test_cli_trains_and_predicts_by_store_keys(small_data, mechanics_profile):
    runner = CliRunner()
    common = ["--store", small_data.root, "--profile", mechanics_profile]
    result = runner.invoke(app, [
        "classify", "train", "--kind", "resnet18", "--fold", "0", "--dataset", "small",
        "--folds", small_data.folds, "--boxes", small_data.boxes,
        "--out", "runs/cli/classify/resnet18/fold0",
        "--epochs", "1", *common,
    ])
    assert result.exit_code == 0, result.output
    trained = json.loads(result.stdout)
    assert trained["model"] == "runs/cli/classify/resnet18/fold0/model.pt"
    assert len(trained["history"]) == 1

    result = runner.invoke(app, [
        "classify", "predict", "--model", trained["model"], "--dataset", "small",
        "--boxes", small_data.boxes, "--out", "preds/small.parquet", "--scale", "1.0",
        "--scale", "1.2", *common,
    ])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["scales"] == [1.0, 1.2] and summary["predicted_pages"] == 3
    assert [q["item"] for q in summary["quarantined"]] == ["syndB_002"]
    assert small_data.store.exists("preds/small.parquet")


def test_fine_tuning_from_a_model_with_pseudolabelled_pages(small_data, mechanics_profile):
    import torch

    from kzjobs.core.checkpoint import load_checkpoint

    store = small_data.store
    base = _train(small_data, mechanics_profile, epochs=1).run()
    # Pseudolabels of an incoming collection: one page with an image, one without.
    source = read_annotations(store.read_bytes(small_data.boxes), allow=(SEG_FP,))
    tiny_store_boxes = source["syndA_000"]
    store.write_bytes("inc/images/syndP_000.jpg", store.read_bytes("small/images/syndA_000.jpg"))
    store.write_bytes("inc/pseudo.csv", write_annotations(
        {"syndP_000": tiny_store_boxes, "syndQ_000": tiny_store_boxes[:3]}))
    tuned = ClassifyTrainJob(
        store_uri=small_data.root, profile_name=mechanics_profile, dataset="small",
        folds=small_data.folds, boxes=small_data.boxes, kind="resnet18", fold=0,
        out="runs/m/classify/resnet18-ft/fold0", pseudo="inc/pseudo.csv",
        pseudo_datasets=["inc"], init=base["model"], progress=False,
    ).run()
    assert tuned["pseudo_pages"] == 1 and tuned["pseudo_pages_without_image"] == ["syndQ_000"]
    # pseudo_share 0.5: the one incoming page is read as often as all training pages.
    assert tuned["pseudo_pages_per_epoch"] == tuned["train_pages"] > 1
    assert tuned["epochs"] == 1  # the profile's finetune_epochs
    assert tuned["lr"] == pytest.approx(0.1 * base["lr"])
    weights = [load_checkpoint(store.read_bytes(k))["model"]["layer3.1.conv2.weight"]
               for k in (base["model"], tuned["model"])]
    fresh = torch.nn.init.kaiming_normal_(torch.empty_like(weights[0]), mode="fan_out")
    # Fine-tuning started from the base model's weights, not from a new initialisation.
    assert (weights[1] - weights[0]).norm() < 0.2 * (fresh - weights[0]).norm()

    with pytest.raises(ValueError, match="labelled training pages"):
        store.write_bytes("inc/bad.csv", write_annotations({"syndB_000": tiny_store_boxes}))
        ClassifyTrainJob(
            store_uri=small_data.root, profile_name=mechanics_profile, dataset="small",
            folds=small_data.folds, boxes=small_data.boxes, kind="resnet18", fold=0,
            out="runs/m/classify/resnet18-bad/fold0", pseudo="inc/bad.csv",
            pseudo_datasets=["inc"], progress=False,
        ).run()
