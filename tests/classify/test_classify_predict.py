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
    cfg = ClassifyConfig(hidden=32, roi_size=3, page_size=200, amp=False)
    model = build_model(model_args("resnet18", 3, cfg)).eval()
    seen: list[tuple[int, ...]] = []
    model.register_forward_pre_hook(lambda _m, args: seen.append(tuple(args[0].shape)))
    image = np.full((400, 300, 3), 255, np.uint8)
    boxes = boxes_of(20, 3)  # 20 px at page_size 200: 10 px characters
    cpu = torch.device("cpu")
    plain = predict_logits(model, image, boxes, cfg, device=cpu)
    sized = predict_logits(model, image, boxes, cfg.model_copy(update={"char_size": 15.0}),
                           device=cpu)
    assert seen[0][2] == 200 and seen[1][2] == 300  # longest side 200, then 1.5x
    assert plain.shape == sized.shape == (3, 3)
    assert not torch.allclose(plain, sized)


def test_with_a_read_margin_only_the_text_block_is_read_and_reads_the_same():
    torch.manual_seed(0)
    cfg = ClassifyConfig(hidden=32, roi_size=3, page_size=1200, amp=False)
    model = build_model(model_args("resnet18", 3, cfg)).eval()
    seen: list[tuple[int, ...]] = []
    model.register_forward_pre_hook(lambda _m, args: seen.append(tuple(args[0].shape)))
    rng = np.random.default_rng(0)
    image = np.full((1200, 900, 3), 255, np.uint8)  # white paper, two columns of text
    boxes = [Box("U+3042", x, y, 30, 30) for x in (500, 540) for y in range(300, 700, 40)]
    for b in boxes:
        image[b.y:b.y + b.h, b.x:b.x + b.w] = rng.integers(0, 255, (b.h, b.w, 3))
    cpu = torch.device("cpu")
    whole = predict_logits(model, image, boxes, cfg, device=cpu)
    block = predict_logits(model, image, boxes, cfg.model_copy(update={"read_margin": 96}),
                           device=cpu)
    # x from 500-96 (down to the 16 px grid: 400) to 570+96, y from 192 to 690+96.
    assert seen == [(1, 3, 1200, 900), (1, 3, 786 - 192, 666 - 400)]
    assert torch.allclose(whole, block, atol=0.05 * float(whole.abs().max()))


def test_a_character_scale_range_must_be_positive_and_ordered():
    with pytest.raises(ValueError, match="char_scale_range"):
        ClassifyConfig(char_scale_range=(2.0, 1.0))
    with pytest.raises(ValueError, match="char_scale_range"):
        ClassifyConfig(char_scale_range=(0.0, 1.0))


def test_a_classifier_loaded_for_inference_runs_channels_last_and_reads_the_same():
    """load_model puts the weights in channels_last (a faster trunk on oneDNN) and
    predict_logits feeds the page in that layout: the logits are the NCHW model's."""
    from kzjobs.classify.model import load_model
    from kzjobs.core.device import layout_of

    torch.manual_seed(0)
    cfg = ClassifyConfig(hidden=32, roi_size=3, page_size=300, amp=False)
    args = model_args("resnet18", 4, cfg)
    plain = build_model(args).eval()
    loaded, vocab = load_model({"model_args": args, "model": plain.state_dict(),
                                "vocabulary": ["a", "b", "c", "seg_fp"]})
    assert layout_of(plain) == torch.contiguous_format
    assert layout_of(loaded) == torch.channels_last and vocab[-1] == "seg_fp"
    seen: list[bool] = []
    loaded.register_forward_pre_hook(lambda _m, args: seen.append(
        args[0].is_contiguous(memory_format=torch.channels_last)))
    image = np.random.default_rng(2).integers(0, 255, (400, 300, 3), np.uint8)
    boxes = boxes_of(30, 4)
    cpu = torch.device("cpu")
    a, b = (predict_logits(m, image, boxes, cfg, device=cpu) for m in (plain, loaded))
    assert seen == [True]
    assert torch.allclose(a, b, atol=1e-4 * float(a.abs().max()))
    assert not torch.allclose(a[0], a[1])  # boxes that differ read differently
