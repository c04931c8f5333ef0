"""bench.int8 on a work folder laid out as bench.classify leaves it: every (kind, fold)
model read in fp32 and with an int8 trunk, on the test books."""

from __future__ import annotations

import io
import json
import sys

import torch

from bench import int8


def test_each_model_is_read_both_ways_over_every_test_box(tmp_path, monkeypatch):
    from kzjobs.classify.dataset import vocabulary
    from kzjobs.classify.model import build_model, model_args
    from kzjobs.core.keys import RunKeys
    from kzjobs.core.profile import load_profile
    from kzjobs.core.store import open_store
    from kzjobs.data.dataset import Dataset
    from kzjobs.data.format import write_annotations
    from kzjobs.synth import generate

    profile = load_profile("tiny")
    store = open_store(tmp_path / "work")
    for name, seed in (("train", 3), ("test", 4)):
        generate(store.child(name), books=1, pages_per_book=2, seed=seed)
        ds = Dataset.open(name, store)
        store.write_bytes(f"{name}/oof.csv", write_annotations(ds.annotations))
    truth = Dataset.open("test", store).annotations
    vocab = vocabulary(truth)
    for fold in range(profile.data.n_folds):
        args = model_args("resnet18", len(vocab), profile.classify)
        buffer = io.BytesIO()
        torch.save({"model_args": args, "model": build_model(args).eval().state_dict(),
                    "vocabulary": vocab}, buffer)
        store.write_bytes(RunKeys("runs/bench").classifier("resnet18", fold),
                          buffer.getvalue())

    out = tmp_path / "int8.json"
    monkeypatch.setattr(sys, "argv", ["bench.int8", "--work", str(tmp_path / "work"),
                                      "--profile", "tiny", "--calibration", "1",
                                      "--out", str(out)])
    int8.main()
    result = json.loads(out.read_text())
    assert [(m["kind"], m["fold"]) for m in result["models"]] == [
        ("resnet18", f) for f in range(profile.data.n_folds)]
    for model in result["models"]:
        assert model["boxes"] == sum(len(page) for page in truth.values())
        assert 0.5 < model["top1_agreement"] <= 1.0  # random weights: near-flat logits
        for variant in ("fp32", "int8 trunk"):
            assert 0.0 <= model[variant]["f1"] <= 1.0
            assert model[variant]["seconds_per_page"] > 0
