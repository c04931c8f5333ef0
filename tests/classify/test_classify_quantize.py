"""The int8 trunk (kzjobs.classify.quantize) of the trained tiny classifier reads the
held-out book as the fp32 model does, and is an int8 network."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kzjobs.checkpoint import load_checkpoint
from kzjobs.classify.model import build_model, load_model
from kzjobs.classify.predict import page_inputs, predict_logits
from kzjobs.classify.quantize import quantize_classifier
from kzjobs.data.dataset import Dataset
from kzjobs.data.format import BOX_CODES, read_annotations
from kzjobs.profile import load_profile


def test_the_int8_trunk_reads_a_held_out_book_as_the_fp32_model(tiny_data, tiny_run):
    store = tiny_data.store
    checkpoint = load_checkpoint(store.read_bytes(tiny_run["model"]))
    trained = build_model(checkpoint["model_args"])
    trained.load_state_dict(checkpoint["model"])
    trained.eval()
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    fp32, _ = load_model(checkpoint)
    cfg = load_profile("tiny").classify
    ds = Dataset.open(tiny_data.dataset, store)
    boxes = read_annotations(store.read_bytes(tiny_data.boxes), allow=BOX_CODES)
    # Calibrated on the training book (fold 0 trained on syndB), judged on syndA.
    calibration = [tensor[None] for i in ds.image_ids() if i.startswith("syndB")
                   for tensor, _ in page_inputs(np.asarray(ds.read_image(i)), boxes[i], cfg)]
    int8 = quantize_classifier(trained, calibration)

    kinds = {type(m).__module__ for m in int8.quantized_trunk.modules()}
    assert any("quantized" in k for k in kinds)  # int8 convolutions, not fp32 ones
    assert not any(isinstance(m, torch.nn.Conv2d) and not type(m).__module__.startswith(
        "torch.ao") for m in int8.quantized_trunk.modules())
    assert all(torch.equal(before[k], v) for k, v in trained.state_dict().items())

    agree = total = 0
    for image_id in (i for i in ds.image_ids() if i.startswith("syndA")):
        image = np.asarray(ds.read_image(image_id))
        a = predict_logits(fp32, image, boxes[image_id], cfg, device=torch.device("cpu"))
        b = predict_logits(int8, image, boxes[image_id], cfg, device=torch.device("cpu"))
        assert a.shape == b.shape
        agree += int((a.argmax(1) == b.argmax(1)).sum())
        total += len(a)
    assert total > 300
    assert agree / total >= 0.95


def test_the_int8_trunk_needs_calibration_pages(tiny_data, tiny_run):
    checkpoint = load_checkpoint(tiny_data.store.read_bytes(tiny_run["model"]))
    model = build_model(checkpoint["model_args"]).eval()
    with pytest.raises(ValueError, match="no calibration pages"):
        quantize_classifier(model, [])
