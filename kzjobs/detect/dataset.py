"""Training crops of pages, and page scaling shared by training and inference.

A page is scaled so that its longest side is ``page_size``; training takes random
crops of it (kept even when they hold no character, so the model learns what is
not one), with albumentations for scale and colour augmentations.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import albumentations as A
import numpy as np
import torch
from PIL import Image

from kzjobs.core.images import ImageError
from kzjobs.data.dataset import Dataset
from kzjobs.data.format import Box
from kzjobs.detect.config import DetectConfig
from kzjobs.detect.model import CHARACTER, IMAGE_MEAN

log = logging.getLogger(__name__)

# Pad with the normalisation mean: torchvision pads batched pages with zeros after
# normalising, which is this colour, so padded crops look like padded pages.
PAD_FILL = tuple(round(m * 255) for m in IMAGE_MEAN)


def page_scale(width: int, height: int, page_size: int) -> float:
    """The factor that brings a page's longest side to ``page_size`` px."""
    return page_size / max(width, height)


def scale_page(image: Image.Image, page_size: int) -> tuple[np.ndarray, float]:
    """The page as an HxWx3 uint8 array at the profile's scale, and the scale factor."""
    scale = page_scale(image.width, image.height, page_size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    if size != image.size:
        image = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
    return np.asarray(image.convert("RGB")), scale


def to_tensor(array: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 to a 3xHxW float tensor in [0, 1]."""
    return torch.from_numpy(np.array(array, dtype=np.uint8)).permute(2, 0, 1).float().div_(255)


def scaled_boxes(boxes: Sequence[Box], scale: float, width: int, height: int) -> np.ndarray:
    """Ground-truth boxes as scaled ``xyxy``, clipped to the scaled page; empty ones dropped."""
    xyxy = np.array([b.xyxy for b in boxes], dtype=np.float64).reshape(-1, 4) * scale
    xyxy[:, 0::2] = xyxy[:, 0::2].clip(0, width)
    xyxy[:, 1::2] = xyxy[:, 1::2].clip(0, height)
    keep = (xyxy[:, 2] - xyxy[:, 0] >= 1) & (xyxy[:, 3] - xyxy[:, 1] >= 1)
    return xyxy[keep]


def train_transform(config: DetectConfig) -> A.Compose:
    height, width = config.crop
    low, high = config.scale_range
    return A.Compose(
        [
            # scale_limit is relative to 1: a factor drawn from [low, high]
            A.RandomScale(scale_limit=(low - 1, high - 1), p=0.0 if low == high == 1 else 1.0),
            A.RandomCrop(height=height, width=width, pad_if_needed=True, fill=PAD_FILL,
                         pad_position="random"),
            A.HueSaturationValue(hue_shift_limit=10, sat_shift_limit=20, val_shift_limit=15,
                                 p=0.5),
            A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5),
            A.RandomGamma(gamma_limit=(80, 120), p=0.5),
        ],
        bbox_params=A.BboxParams(
            format="pascal_voc",
            label_fields=["labels"],
            # "at least half visible": a box cut exactly in half stays despite float error
            min_visibility=max(0.0, config.min_visible - 1e-6),
        ),
    )


class PageCrops(torch.utils.data.Dataset):
    """``crops_per_page`` random crops of every page, per epoch.

    The augmentation of item ``i`` in epoch ``e`` depends only on (seed, e, i), so an
    epoch is the same with any number of workers and after a resume.
    A page that cannot be read yields ``None`` (dropped by :func:`collate`).
    """

    def __init__(self, dataset: Dataset, image_ids: Sequence[str], config: DetectConfig,
                 *, seed: int = 0) -> None:
        self.dataset = dataset
        self.image_ids = list(image_ids)
        self.config = config
        self.seed = seed
        self.epoch = 0
        self.transform = train_transform(config)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.image_ids) * self.config.crops_per_page

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]] | None:
        image_id = self.image_ids[index % len(self.image_ids)]
        try:
            image = self.dataset.read_image(image_id)
        except (ImageError, KeyError) as exc:
            log.warning("skipping page %s: %s", image_id, exc)
            return None
        array, scale = scale_page(image, self.config.page_size)
        boxes = scaled_boxes(self.dataset.annotations.get(image_id, ()), scale,
                             array.shape[1], array.shape[0])
        seed = np.random.SeedSequence([self.seed, self.epoch, index]).generate_state(1)[0]
        self.transform.set_random_seed(int(seed))
        out = self.transform(image=array, bboxes=boxes, labels=np.full(len(boxes), CHARACTER))
        xyxy = torch.as_tensor(np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4))
        target = {
            "boxes": xyxy,
            "labels": torch.full((len(xyxy),), CHARACTER, dtype=torch.int64),
        }
        return to_tensor(out["image"]), target


def collate(batch: Sequence[Any]) -> tuple[tuple[torch.Tensor, ...], tuple[dict, ...]]:
    """Lists of images and targets (pages of different sizes), unreadable pages dropped."""
    items = [item for item in batch if item is not None]
    if not items:
        return (), ()
    images, targets = zip(*items, strict=True)
    return images, targets
