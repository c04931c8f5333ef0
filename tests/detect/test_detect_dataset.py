"""Training crops: page scale, crop size, empty crops, the 50% visibility rule."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from kzjobs.core.store import open_store
from kzjobs.data.dataset import Dataset
from kzjobs.data.format import Box, write_annotations
from kzjobs.detect.config import DetectConfig


def page_dataset(tmp_path, pages: dict[str, tuple[tuple[int, int], list[Box]]]) -> Dataset:
    """A labelled dataset of white pages with each box painted solid black."""
    store = open_store(tmp_path / "ds")
    for image_id, (size, boxes) in pages.items():
        image = Image.new("RGB", size, "white")
        draw = ImageDraw.Draw(image)
        for b in boxes:
            draw.rectangle((b.x, b.y, b.x + b.w - 1, b.y + b.h - 1), fill="black")
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        store.write_bytes(f"images/{image_id}.png", buf.getvalue())
    store.write_bytes("train.csv", write_annotations({i: b for i, (_, b) in pages.items()}))
    return Dataset(store)


def test_pages_are_scaled_to_the_profile_page_size():
    from kzjobs.detect.dataset import scale_page, scaled_boxes

    array, scale = scale_page(Image.new("RGB", (800, 400)), 200)
    assert array.shape == (100, 200, 3) and scale == 0.25
    boxes = scaled_boxes([Box("U+3042", 100, 40, 80, 40), Box("U+3042", 790, 390, 40, 40)],
                         scale, 200, 100)
    assert boxes.tolist() == [[25.0, 10.0, 45.0, 20.0], [197.5, 97.5, 200.0, 100.0]]


def test_crops_have_the_crop_size_and_are_reproducible(tmp_path):
    from kzjobs.detect.dataset import PageCrops

    boxes = [Box("U+3042", x, y, 20, 24) for x in range(20, 380, 40) for y in range(20, 560, 40)]
    ds = page_dataset(tmp_path, {"aa_001": ((400, 600), boxes)})
    config = DetectConfig(page_size=300, crop=(64, 96), crops_per_page=20)
    crops = PageCrops(ds, ["aa_001"], config, seed=3)
    assert len(crops) == 20
    seen = 0
    for i in range(len(crops)):
        image, target = crops[i]
        assert image.shape == (3, 64, 96) and image.dtype == torch.float32
        xyxy = target["boxes"]
        assert xyxy.shape[1] == 4 and (target["labels"] == 1).all()
        assert (xyxy[:, 0::2] >= 0).all() and (xyxy[:, 0::2] <= 96).all()
        assert (xyxy[:, 1::2] >= 0).all() and (xyxy[:, 1::2] <= 64).all()
        assert ((xyxy[:, 2:] - xyxy[:, :2]) > 0).all()
        seen += len(xyxy)
    assert seen > 0
    again = PageCrops(ds, ["aa_001"], config, seed=3)[5]
    assert torch.equal(again[0], crops[5][0])
    assert torch.equal(again[1]["boxes"], crops[5][1]["boxes"])
    crops.set_epoch(1)
    assert not torch.equal(crops[5][0], again[0])  # each epoch draws new crops


def test_crops_without_characters_are_kept(tmp_path):
    """Empty crops teach the model what is not a character: they are not resampled."""
    from kzjobs.detect.dataset import PageCrops, collate

    ds = page_dataset(tmp_path, {"aa_001": ((400, 400), [Box("U+3042", 10, 10, 30, 30)])})
    crops = PageCrops(ds, ["aa_001"], DetectConfig(page_size=400, crop=(64, 64),
                                                   crops_per_page=30), seed=0)
    counts = [len(crops[i][1]["boxes"]) for i in range(len(crops))]
    assert 0 in counts
    images, targets = collate([crops[i] for i in range(4)])
    assert len(images) == len(targets) == 4


def test_a_cut_box_is_kept_when_at_least_half_visible(tmp_path):
    """Black pixels in the crop measure how much of the box is visible."""
    from kzjobs.detect.dataset import PageCrops

    box = Box("U+3042", 80, 80, 40, 40)
    ds = page_dataset(tmp_path, {"aa_001": ((200, 200), [box])})
    config = DetectConfig(page_size=200, crop=(64, 64), crops_per_page=300,
                          scale_range=(1.0, 1.0))
    crops = PageCrops(ds, ["aa_001"], config, seed=1)
    kept_partial = dropped_partial = 0
    for i in range(len(crops)):
        image, target = crops[i]
        visible = (image.max(dim=0).values < 100 / 255).sum().item() / (box.w * box.h)
        if 0 < visible < 1:
            kept = len(target["boxes"]) == 1
            assert kept == (visible >= 0.5), visible
            kept_partial += kept
            dropped_partial += not kept
        if len(target["boxes"]):
            x0, y0, x1, y1 = target["boxes"][0].tolist()
            assert (x1 - x0) * (y1 - y0) == pytest.approx(visible * box.w * box.h, abs=1)
    assert kept_partial and dropped_partial


def test_unreadable_pages_are_skipped_not_fatal(tmp_path):
    from kzjobs.detect.dataset import PageCrops, collate

    ds = page_dataset(tmp_path, {"aa_001": ((100, 100), [Box("U+3042", 10, 10, 30, 30)])})
    ds.store.write_bytes("images/aa_002.jpg", b"not a jpeg")
    ds.store.write_bytes("train.csv", write_annotations(
        {"aa_001": [Box("U+3042", 10, 10, 30, 30)], "aa_002": []}))
    ds = Dataset(ds.store)
    crops = PageCrops(ds, ["aa_001", "aa_002"], DetectConfig(page_size=100, crop=(64, 64)))
    assert crops[1] is None
    images, _ = collate([crops[0], crops[1]])
    assert len(images) == 1
    assert np.isfinite(images[0].numpy()).all()
