"""The detector jobs end to end on synthetic books: it learns, OOF boxes, new pages,
quarantine, re-runs that only do the missing work, and resume after a kill.

The tiny profile trains on the pages of two books and is scored on two books it
never saw. Floor: detection-only F1 >= 0.5, and at least 0.3 above the F1 of as many
random boxes as there are characters (chance, about 0.1 on these pages).
"""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import kzjobs.core.device
from kzjobs.data.format import BOX_CODES, SEG_FP, UNKNOWN, Box, read_annotations

F1_FLOOR = 0.5
ABOVE_CHANCE = 0.3
# Books cycle through these: books A and C validate fold 0, B and D train it, and both
# fonts are in both halves.
FONTS = ("kouzan-sousyo", "kouzan-sousyo", "kouzan-gyousyo", "kouzan-gyousyo")


def cli(*args: str) -> dict:
    from kzjobs.cli import app

    result = CliRunner().invoke(app, list(args))
    if result.exit_code != 0:
        raise AssertionError(f"exit {result.exit_code}: {result.output}\n{result.exception!r}")
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A trained tiny detector (fold 0), made once for the module."""
    from kzjobs.core.settings import get_settings
    from kzjobs.core.store import open_store
    from kzjobs.synth import generate

    root = tmp_path_factory.mktemp("detect")
    store = open_store(root / "store")
    generate(store.child("ds"), books=4, pages_per_book=2, seed=11, fonts=FONTS)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KZ_HOME", str(root / "home"))
        mp.delenv("KZ_MLFLOW_URI", raising=False)
        get_settings.cache_clear()
        cli("folds", "ds", "--out", "runs/r/folds.json", "--store", store.uri,
            "--profile", "tiny")
        summary = cli("detect", "train", "--dataset", "ds", "--folds", "runs/r/folds.json",
                      "--fold", "0", "--out", "runs/r/detect/fold0", "--store", store.uri,
                      "--profile", "tiny", "--no-progress")
        tracking_uri = get_settings().tracking_uri
    get_settings.cache_clear()
    return {"store": store, "summary": summary, "tracking_uri": tracking_uri}


def chance_f1(truth: dict[str, list[Box]], store) -> float:
    """F1 of as many random boxes as characters, uniformly placed on each page."""
    from PIL import Image

    from kzjobs.data.format import Point
    from kzjobs.method.metric import score

    rng = random.Random(0)
    preds = {}
    for image_id, boxes in truth.items():
        w, h = Image.open(io.BytesIO(store.read_bytes(f"ds/images/{image_id}.jpg"))).size
        preds[image_id] = [Point("", rng.uniform(0, w), rng.uniform(0, h)) for _ in boxes]
    return score(truth, preds, ignore_code=True).f1


def test_tiny_profile_learns_to_find_characters_in_unseen_books(run):
    from kzjobs.core.checkpoint import load_from_store
    from kzjobs.data.dataset import Dataset

    store, summary = run["store"], run["summary"]
    assert summary["valid_books"] == ["synlA", "synlC"]
    assert summary["train_pages"] == 4 and summary["valid_pages"] == 4
    ds = Dataset(store.child("ds"))
    truth = {i: ds.annotations[i] for i in ds.image_ids() if i.startswith(("synlA", "synlC"))}
    chance = chance_f1(truth, store)
    f1 = summary["valid"]["f1"]
    print(f"tiny detector: valid F1 {f1:.3f} (chance {chance:.3f})")
    assert f1 >= F1_FLOOR and f1 >= chance + ABOVE_CHANCE

    ckpt = load_from_store(store, "runs/r/detect/fold0/model.pt")  # weights_only: no pickled code
    assert ckpt["fold"] == 0 and ckpt["config"]["backbone"] == "resnet18"
    assert ckpt["metrics"]["valid_f1"] == f1
    assert not store.exists("runs/r/detect/fold0/checkpoint.pt")
    assert store.read_json("runs/r/detect/fold0/metrics.json")["valid"]["f1"] == f1


def test_training_is_tracked_in_mlflow(run):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=run["tracking_uri"])
    mlrun = client.get_run(run["summary"]["mlflow_run_id"])
    assert mlrun.data.params["detect.backbone"] == "resnet18"
    assert mlrun.data.params["fold"] == "0"
    assert mlrun.data.metrics["valid_f1"] == pytest.approx(run["summary"]["valid"]["f1"])
    losses = client.get_metric_history(mlrun.info.run_id, "train_loss")
    assert len(losses) == run["summary"]["epochs"]
    assert losses[-1].value < losses[0].value  # it learned
    assert "valid_f1_synlA" in mlrun.data.metrics
    artifacts = {a.path for a in client.list_artifacts(mlrun.info.run_id)}
    assert {"valid_f1_by_book.png", "valid_page.png"} <= artifacts


def test_a_trained_fold_is_not_trained_again(run):
    from kzjobs.core.settings import get_settings

    store = run["store"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("KZ_MLFLOW_URI", run["tracking_uri"])
        get_settings.cache_clear()
        again = cli("detect", "train", "--dataset", "ds", "--folds", "runs/r/folds.json",
                    "--fold", "0", "--out", "runs/r/detect/fold0", "--store", store.uri,
                    "--profile", "tiny", "--no-progress")
    get_settings.cache_clear()
    assert again["skipped"] is True and again["valid"] == run["summary"]["valid"]


def test_out_of_fold_boxes_are_labelled_by_iou(run):
    from torchvision.ops import box_iou

    from kzjobs.data.dataset import Dataset

    store = run["store"]
    result = cli("detect", "predict", "--model", "runs/r/detect/fold0/model.pt",
                 "--dataset", "ds", "--valid-only", "--folds", "runs/r/folds.json",
                 "--out", "runs/r/detect/fold0/oof.csv", "--store", store.uri,
                 "--profile", "tiny", "--no-progress")
    assert result["fold"] == 0 and result["quarantined"] == 0
    # the same model and pages as the training job's validation: the same F1 (to bf16's
    # rounding where the CPU does bf16: predict reads in channels_last, training in NCHW)
    tolerance = 0.01 if kzjobs.core.device.cpu_has_bf16() else 1e-6
    assert result["valid"]["f1"] == pytest.approx(run["summary"]["valid"]["f1"], abs=tolerance)
    oof = read_annotations(store.read_bytes("runs/r/detect/fold0/oof.csv"), allow=BOX_CODES)
    truth = Dataset(store.child("ds")).annotations
    assert sorted(oof) == sorted(i for i in truth if i.startswith(("synlA", "synlC")))
    labelled = fp = 0
    for image_id, boxes in oof.items():
        gt = truth[image_id]
        ious = box_iou(torch.tensor([b.xyxy for b in boxes], dtype=torch.float),
                       torch.tensor([b.xyxy for b in gt], dtype=torch.float))
        best, index = ious.max(dim=1)
        for box, value, j in zip(boxes, best.tolist(), index.tolist(), strict=True):
            if box.code == SEG_FP:
                assert value < 0.5
                fp += 1
            else:
                assert value >= 0.5 and box.code == gt[j].code
                labelled += 1
    assert labelled > fp  # most boxes are characters; the rest are the classifier's seg_fp

    # a model must not predict "out of fold" on the books it was trained on
    from kzjobs.cli import app

    bad = CliRunner().invoke(app, [
        "detect", "predict", "--model", "runs/r/detect/fold0/model.pt", "--dataset", "ds",
        "--valid-only", "--folds", "runs/r/folds.json", "--fold", "1",
        "--out", "runs/r/x.csv", "--store", store.uri, "--profile", "tiny"])
    assert bad.exit_code != 0 and "trained for fold 0" in str(bad.exception)


def test_new_pages_get_unk_boxes_bad_pages_are_quarantined_and_reruns_resume(run):
    from kzjobs.synth import generate

    store = run["store"]
    generate(store.child("incoming"), books=1, pages_per_book=2, seed=12, labelled=False)
    store.write_bytes("incoming/images/zz_001.jpg", b"\xff\xd8\xff\xe0 truncated")
    store.write_bytes("incoming/images/zz_002.jpg", b"")
    args = ["detect", "predict", "--model", "runs/r/detect/fold0/model.pt",
            "--dataset", "incoming", "--out", "pred/incoming/boxes.csv", "--store", store.uri,
            "--profile", "tiny", "--no-progress"]
    first = cli(*args)
    assert first["pages"] == 2 and first["quarantined"] == 2 and first["predicted_this_run"] == 4
    boxes = read_annotations(store.read_bytes("pred/incoming/boxes.csv"), allow=BOX_CODES)
    assert len(boxes) == 2 and all(b.code == UNKNOWN for p in boxes.values() for b in p)
    assert sum(len(p) for p in boxes.values()) > 50
    quarantine = store.read_json(first["quarantine"])
    assert [q["item"] for q in quarantine] == ["zz_001", "zz_002"]
    assert all(q["reason"] for q in quarantine)
    assert "empty" in quarantine[1]["reason"]

    output = store.read_bytes("pred/incoming/boxes.csv")
    again = cli(*args)
    assert again["predicted_this_run"] == 0
    assert store.read_bytes("pred/incoming/boxes.csv") == output
    # a crash after some pages: only the missing page is redone, the output is the same
    page = sorted(boxes)[0]
    store.delete(f"pred/incoming/boxes.parts/{page}.json")
    store.delete("pred/incoming/boxes.csv")
    resumed = cli(*args)
    assert resumed["predicted_this_run"] == 1
    assert store.read_bytes("pred/incoming/boxes.csv") == output


def test_training_resumes_after_a_kill_from_the_last_epoch(run, tmp_path, monkeypatch):
    """An interrupted run, resumed, ends with the same weights as an uninterrupted one."""
    import mlflow

    from kzjobs.core.checkpoint import load_from_store
    from kzjobs.detect import engine
    from kzjobs.detect.jobs import DetectTrainJob

    store = run["store"]
    micro = ("detect:\n  fpn_channels: 16\n  box_head_size: 32\n  roi_batch_size: 32\n"
             "  page_size: 192\n  crop: [96, 96]\n  batch_size: 2\n  epochs: 2\n"
             "  threads: 1\n  warmup_iters: ")
    profile, longer_warmup = tmp_path / "micro.yaml", tmp_path / "micro-warmup3.yaml"
    profile.write_text(micro + "2\n")
    longer_warmup.write_text(micro + "3\n")

    def job(out: str, profile: Path = profile, fold: int = 1) -> DetectTrainJob:
        return DetectTrainJob(store_uri=store.uri, profile_name=str(profile), dataset="ds",
                              folds="runs/r/folds.json", fold=fold, out=out, progress=False)

    straight = job("micro/straight").run()
    real = engine.train_one_epoch
    calls = []

    def killed_in_second_epoch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "train_one_epoch", killed_in_second_epoch)
    with pytest.raises(KeyboardInterrupt):
        job("micro/resumed").run()
    assert load_from_store(store, "micro/resumed/checkpoint.pt")["epoch"] == 1
    assert not store.exists("micro/resumed/model.pt")
    monkeypatch.setattr(engine, "train_one_epoch", real)
    # It resumes only the fold and settings it was made with, and says what changed.
    with pytest.raises(ValueError, match=r"fold 1, changed: \['warmup_iters'\]"):
        job("micro/resumed", longer_warmup).run()
    with pytest.raises(ValueError, match=r"fold 1, changed: \[\]"):
        job("micro/resumed", fold=0).run()
    resumed = job("micro/resumed").run()

    assert resumed["resumed_from_epoch"] == 1 and straight["resumed_from_epoch"] == 0
    a = load_from_store(store, "micro/straight/model.pt")["model"]
    b = load_from_store(store, "micro/resumed/model.pt")["model"]
    for name, tensor in a.items():
        torch.testing.assert_close(b[name], tensor, msg=name)
    from kzjobs.core.settings import get_settings

    client = mlflow.MlflowClient(tracking_uri=get_settings().tracking_uri)
    history = client.get_metric_history(resumed["mlflow_run_id"], "train_loss")
    assert [m.step for m in history] == [0, 1]  # one MLflow run across the kill
