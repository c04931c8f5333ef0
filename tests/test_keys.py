"""A run's key layout and the quarantine record: the strings existing stores hold."""

from __future__ import annotations

import json

from kzjobs.core.keys import RunKeys, recognize_run, retrain_run
from kzjobs.core.quarantine import Quarantined, beside, read_quarantine, write_quarantine
from kzjobs.core.store import open_store


def test_a_runs_keys_are_the_ones_its_stores_hold():
    keys = RunKeys("runs/retrain/r1")
    assert keys.folds == "runs/retrain/r1/folds.json"
    assert keys.detect_fold(1) == "runs/retrain/r1/detect/fold1"
    assert keys.detector(0) == "runs/retrain/r1/detect/fold0/model.pt"
    assert keys.detect_oof(0) == "runs/retrain/r1/detect/fold0/oof.csv"
    assert keys.oof_boxes == "runs/retrain/r1/oof_boxes.csv"  # not under detect/
    assert keys.classify("resnet18-ft", 2) == "runs/retrain/r1/classify/resnet18-ft/fold2"
    assert keys.classifier("a", 0) == "runs/retrain/r1/classify/a/fold0/model.pt"
    assert keys.incoming_preds("incoming/batch 1/", "a", 1) == \
        "runs/retrain/r1/incoming/incoming-batch-1/preds/a-fold1.parquet"
    assert keys.pseudo_labels == "runs/retrain/r1/pseudo/labels.csv"
    assert keys.pseudo_report == "runs/retrain/r1/pseudo/labels.json"
    assert keys.level2.lightgbm(1) == "runs/retrain/r1/level2/fold1/lgb.txt"
    assert keys.bundle == "runs/retrain/r1" and keys.evaluation.endswith("/evaluation.json")
    # relative to the run: the names a bundle manifest lists
    assert RunKeys("").level2.xgboost(0) == "level2/fold0/xgb.ubj"
    assert RunKeys("").classifier("a", 1) == "classify/a/fold1/model.pt"
    assert retrain_run("manual__2026-01-01T00:00:00+00:00") == \
        "runs/retrain/manual__2026-01-01T00-00-00+00-00"
    assert recognize_run("incoming/a", "r") == "runs/recognize/incoming-a/r"


def test_one_record_shape_written_and_read_back(tmp_path):
    store = open_store(tmp_path)
    records = [Quarantined(item="p_1", key="images/p_1.png", reason="truncated", stage="read"),
               Quarantined(item="p_2", box_id=3, model="a/fold0", reason="non-finite logit")]
    key = beside("preds/a-fold0.parquet")
    assert key == "preds/a-fold0.quarantine.json"
    write_quarantine(store, key, records)
    # unknown fields are left out, the others keep one order
    assert json.loads(store.read_text(key)) == [
        {"item": "p_1", "key": "images/p_1.png", "reason": "truncated", "stage": "read"},
        {"item": "p_2", "box_id": 3, "model": "a/fold0", "reason": "non-finite logit"},
    ]
    assert read_quarantine(store, key) == records
    write_quarantine(store, "quarantine/p_1.json", records[0])  # one record a file
    assert read_quarantine(store, "quarantine/p_1.json") == records[:1]
