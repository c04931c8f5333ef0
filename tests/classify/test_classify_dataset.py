"""Training crops, the vocabulary, and box capping."""

from __future__ import annotations

import albumentations as A
import numpy as np
import torch

from kzjobs.classify.config import ClassifyConfig
from kzjobs.classify.dataset import (
    Collate,
    CropDataset,
    cap_boxes,
    repeat_to_share,
    vocabulary,
)
from kzjobs.data.dataset import Dataset
from kzjobs.data.format import SEG_FP, Box, read_annotations


def test_vocabulary_is_the_sorted_dataset_classes_then_seg_fp():
    pages = {"a_1": [Box("U+3044", 0, 0, 5, 5), Box("U+3042", 0, 0, 5, 5)],
             "b_1": [Box("U+3044", 1, 1, 5, 5), Box(SEG_FP, 2, 2, 5, 5), Box("unk", 1, 1, 2, 2)]}
    assert vocabulary(pages) == ["U+3042", "U+3044", SEG_FP]


def test_pseudolabelled_pages_are_repeated_to_their_share_of_an_epoch():
    incoming = ["p1", "p2"]
    assert repeat_to_share(incoming, 48, 0.0) == incoming  # off: each page once
    half = repeat_to_share(incoming, 48, 0.5)
    assert len(half) == 48 and set(half) == set(incoming)
    assert half.count("p1") == half.count("p2")  # every page as often as the others
    assert len(repeat_to_share(incoming, 48, 0.2)) == 12  # 12 of 60 pages
    assert repeat_to_share(incoming, 1, 0.1) == incoming  # never fewer than once each
    assert repeat_to_share([], 48, 0.5) == []


def test_cap_boxes_caps_and_rounds_down_to_the_bucket():
    torch.manual_seed(0)
    assert int(cap_boxes([200, 150], 256, 32).sum()) == 256
    assert int(cap_boxes([50, 30], 256, 32).sum()) == 64  # 80 -> a multiple of 32
    assert int(cap_boxes([5, 10], 256, 32).sum()) == 15  # fewer than a bucket: all kept
    mask = cap_boxes([300], 256, 32)
    assert mask.shape == (300,) and int(mask.sum()) == 256


def test_collate_keeps_boxes_with_their_targets_and_drops_unreadable_pages():
    torch.manual_seed(0)
    # Each box's target is its x0, so a box and its target can be checked after the shuffle.
    samples = []
    for n in (40, 30):
        xyxy = torch.rand(n, 4) * 10
        samples.append((torch.zeros(3, 8, 8), xyxy, xyxy[:, 0].round().long()))
    images, boxes, targets = Collate(max_boxes=48, bucket=16)([samples[0], None, samples[1]])
    assert images.shape == (2, 3, 8, 8)
    assert sum(len(b) for b in boxes) == len(targets) == 48
    assert torch.equal(torch.cat(boxes)[:, 0].round().long(), targets)
    assert Collate(48, 16)([None, None]) is None


def test_crops_hold_visible_boxes_at_the_crop_size(tiny_data):
    data = Dataset.open(tiny_data.dataset, tiny_data.store)
    boxes = read_annotations(data.store.read_bytes("oof.csv"), allow=(SEG_FP,))
    vocab = vocabulary(data.annotations)
    cfg = ClassifyConfig(page_size=640, crop=(256, 192), crop_jitter=0.3, crops_per_page=3,
                         min_visible=0.99)
    page = "syndB_000"
    crops = CropDataset(data, boxes, [page], vocab, cfg)
    crops.set_epoch(0)
    assert len(crops) == 3
    image_w, image_h = data.read_image(page).size
    page_scale = 640 / max(image_w, image_h)
    sizes = np.array([(b.w, b.h) for b in boxes[page]], dtype=float) * page_scale
    seen = 0
    for i in range(len(crops)):
        image, xyxy, targets = crops[i]
        assert image.shape == (3, 256, 192) and image.dtype == torch.float32
        assert len(xyxy) == len(targets) > 0
        assert (xyxy[:, :2] >= 0).all() and (xyxy[:, 2] <= 192).all() and (xyxy[:, 3] <= 256).all()
        assert set(targets.tolist()) <= set(range(len(vocab)))
        # The crop was resized by 1/(1±0.3): box sizes stay within that range of the page's.
        w = (xyxy[:, 2] - xyxy[:, 0]).numpy()
        assert 0.7 * np.median(sizes[:, 0]) / 1.05 < np.median(w) < np.median(sizes[:, 0]) / 0.7
        seen += len(targets)
    assert seen < 3 * len(boxes[page])  # a crop holds only part of the page


def test_a_box_cut_by_the_crop_is_left_out():
    from kzjobs.classify.dataset import train_transform

    cfg = ClassifyConfig(page_size=200, crop=(100, 100), crop_jitter=0.0, augment=False)
    transform = train_transform(cfg, seed=0)
    image = np.full((200, 200, 3), 255, np.uint8)
    # A grid of boxes: whichever 100x100 window is cut, some boxes straddle its edge.
    grid = np.array([(x, y, x + 30, y + 30) for x in range(0, 200, 40) for y in range(0, 200, 40)],
                    dtype=np.float32)
    out = transform(image=image, bboxes=grid, labels=np.arange(len(grid)))
    kept = np.asarray(out["bboxes"])
    assert 0 < len(kept) < len(grid)
    sizes = kept[:, 2:] - kept[:, :2]
    assert np.allclose(sizes, 30, atol=0.5)  # only whole boxes, none clipped


def test_the_ink_warp_bends_strokes_by_a_few_pixels_and_leaves_the_boxes():
    from kzjobs.classify.dataset import InkWarp, train_transform

    image = np.full((96, 96, 3), 255, np.uint8)
    image[:, 46:50] = 0  # a straight vertical stroke
    box = np.array([[40.0, 10.0, 56.0, 86.0]])
    cfg = ClassifyConfig(shape_p=1.0)
    warp = next(t for t in train_transform(cfg).transforms if isinstance(t, InkWarp))
    out = A.Compose([warp], seed=0,
                    bbox_params=A.BboxParams(format="pascal_voc", label_fields=["labels"]))(
        image=image, bboxes=box, labels=[0])
    ink = out["image"][:, :, 0] < 128
    centres = np.array([np.flatnonzero(row).mean() for row in ink[8:-8] if row.any()])
    assert len(centres) > 70
    assert np.ptp(centres) > 1  # no longer straight ...
    assert np.abs(centres - 47.5).max() < 8  # ... but still inside its box
    assert not ink[:, :30].any() and not ink[:, 66:].any()  # no ink from the edges
    assert np.allclose(out["bboxes"], box)


def test_stroke_width_thickens_or_thins_the_ink():
    from kzjobs.classify.dataset import StrokeWidth

    image = np.full((64, 64, 3), 255, np.uint8)
    image[:, 30:34] = 0
    ink = {op: int((StrokeWidth(scale=(3, 3), operation=op, p=1.0)(image=image)["image"] < 128)
                   .sum()) for op in ("erosion", "dilation")}
    before = int((image < 128).sum())
    assert ink["erosion"] > before > ink["dilation"] > 0


def test_shape_augmentations_come_after_the_crop_so_the_boxes_are_those_of_the_crop():
    from kzjobs.classify.dataset import train_transform

    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (200, 200, 3), dtype=np.uint8)
    grid = np.array([(x, y, x + 30, y + 30) for x in range(0, 200, 40) for y in range(0, 200, 40)],
                    dtype=np.float32)
    # Both with colour augmentation, so only the shape transforms differ between them.
    cfg = ClassifyConfig(page_size=200, crop=(100, 100), crop_jitter=0.2, shape_p=0.0)
    shaped = cfg.model_copy(update={"shape_p": 1.0})
    names = [type(t).__name__ for t in train_transform(shaped).transforms]
    assert names.index("InkWarp") > names.index("RandomSizedCrop")
    assert "InkWarp" not in [type(t).__name__ for t in train_transform(cfg).transforms]
    for seed in range(3):
        plain = train_transform(cfg, seed=seed)(image=image, bboxes=grid, labels=np.arange(25))
        warped = train_transform(shaped, seed=seed)(image=image, bboxes=grid, labels=np.arange(25))
        assert np.array_equal(plain["labels"], warped["labels"])
        assert np.allclose(plain["bboxes"], warped["bboxes"])
