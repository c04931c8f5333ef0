"""Inference scale: each page read so that its characters come out at the profile's size."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kzjobs.classify.config import ClassifyConfig
from kzjobs.classify.model import build_model, model_args
from kzjobs.classify.predict import page_scale, predict_logits
from kzjobs.data.format import Box


def boxes_of(side: int, n: int = 5) -> list[Box]:
    return [Box("U+3042", 10 + 40 * i, 10, side, side) for i in range(n)]


def test_the_page_scale_brings_the_median_box_to_the_character_size():
    # 16 px boxes on a page 2048 px high read at 1024: 8 px characters.
    def scale(char_size, boxes=boxes_of(16)):
        return page_scale(boxes, 2048, 1500, page_size=1024, char_size=char_size,
                          limits=(0.5, 2.0))

    assert scale(12) == pytest.approx(1.5)
    assert scale(2) == 0.5 and scale(40) == 2.0  # clipped to the limits
    assert scale(0) == 1.0 and scale(12, boxes=[]) == 1.0  # off; nothing boxed
    mixed = boxes_of(16, 3) + boxes_of(64, 2)  # the median, not the mean
    assert scale(12, boxes=mixed) == pytest.approx(1.5)


def test_the_classifier_reads_the_page_at_the_scale_of_its_characters():
    cfg = ClassifyConfig(hidden=32, roi_size=3)
    model = build_model(model_args("resnet18", 3, cfg)).eval()
    seen: list[tuple[int, ...]] = []
    model.register_forward_pre_hook(lambda _m, args: seen.append(tuple(args[0].shape)))
    image = np.full((400, 300, 3), 255, np.uint8)
    boxes = boxes_of(20, 3)  # 20 px at page_size 200: 10 px characters
    plain = predict_logits(model, image, boxes, page_size=200, scales=(1.0,),
                           device=torch.device("cpu"), amp=False)
    sized = predict_logits(model, image, boxes, page_size=200, scales=(1.0,),
                           device=torch.device("cpu"), amp=False, char_size=15.0)
    assert seen[0][2] == 200 and seen[1][2] == 300  # longest side 200, then 1.5x
    assert plain.shape == sized.shape == (3, 3)
    assert not torch.allclose(plain, sized)


def test_a_character_scale_range_must_be_positive_and_ordered():
    with pytest.raises(ValueError, match="char_scale_range"):
        ClassifyConfig(char_scale_range=(2.0, 1.0))
    with pytest.raises(ValueError, match="char_scale_range"):
        ClassifyConfig(char_scale_range=(0.0, 1.0))
