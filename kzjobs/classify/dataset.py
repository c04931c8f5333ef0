"""Training data: large random crops of pages holding many boxes, box capping, collate.

A page is scaled so its longest side is ``page_size``; a crop of ``crop`` (h, w) varied by
±``crop_jitter`` is cut and resized back to ``crop``, so the model sees scale changes.
With ``shape_p`` its glyphs are then warped and their strokes thickened or thinned, so the
model sees more hands than the training fonts hold.
A box is kept when at least ``min_visible`` of it is inside the crop.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Container, Iterable, Mapping, Sequence
from typing import Any

import albumentations as A
import cv2
import numpy as np
import torch
from albumentations.pytorch import ToTensorV2

from kzjobs.classify.config import ClassifyConfig
from kzjobs.core.images import ImageError
from kzjobs.data.dataset import Dataset
from kzjobs.data.format import SEG_FP, UNKNOWN, Box

log = logging.getLogger(__name__)

Sample = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # image (3,h,w), boxes (n,4), targets (n,)


def vocabulary(annotations: Mapping[str, Iterable[Box]],
               known: Container[str] | None = None) -> list[str]:
    """The dataset's classes, sorted, then ``seg_fp``: the model's output order.

    With ``known`` (the dataset's ``unicode_translation.csv``), a code outside it is no
    class: validation quarantines its page, and training leaves its boxes out, as it does
    every box whose code is not in the vocabulary."""
    codes = {b.code for boxes in annotations.values() for b in boxes} - {SEG_FP, UNKNOWN}
    return [*sorted(c for c in codes if known is None or c in known), SEG_FP]


def repeat_to_share(pages: Sequence[str], others: int, share: float) -> list[str]:
    """``pages`` repeated (each at least once) so that they make about ``share`` of an
    epoch alongside ``others`` pages."""
    if not pages or share <= 0:
        return list(pages)
    times = max(1, round(share / (1 - share) * others / len(pages)))
    return list(pages) * times


class _BoxesStay:
    """Leaves the boxes as they are. Albumentations moves boxes through a warp one mask a
    box (78 ms for a crop of 60 boxes, against 4 ms for its image), and the warp here moves
    ink by 1.5 px (sd; alpha 120, sigma 6), a tenth of a 16 px feature cell."""

    def apply_to_bboxes(self, bboxes: np.ndarray, *args: Any, **params: Any) -> np.ndarray:
        return bboxes


class InkWarp(_BoxesStay, A.ElasticTransform):
    """An elastic warp of the glyphs: one font's shapes drawn by another hand."""


class StrokeWidth(_BoxesStay, A.Morphological):
    """Strokes thickened (erosion of the light paper) or thinned (its dilation)."""


def _shape(cfg: ClassifyConfig) -> list[A.BasicTransform]:
    if not (cfg.augment and cfg.shape_p):
        return []
    return [
        # Reflected at the edges: the default pads with black, which reads as ink.
        InkWarp(alpha=cfg.warp_alpha, sigma=cfg.warp_sigma, border_mode=cv2.BORDER_REFLECT_101,
                p=cfg.shape_p),
        A.OneOf([StrokeWidth(scale=(2, 3), operation="erosion"),
                 StrokeWidth(scale=(2, 3), operation="dilation")], p=cfg.shape_p),
    ]


def _colour(cfg: ClassifyConfig) -> list[A.BasicTransform]:
    if not cfg.augment:
        return []
    return [
        A.HueSaturationValue(hue_shift_limit=10, sat_shift_limit=20, val_shift_limit=20, p=0.5),
        A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5),
        A.RandomGamma(gamma_limit=(80, 120), p=0.5),
    ]


def augmentations(cfg: ClassifyConfig, *, scan: bool = False) -> A.Compose:
    """The shape and colour augmentations of training crops, normalised to a tensor, for
    crops made elsewhere (pretraining's glyphs); ``scan`` adds blur and JPEG artefacts."""
    scanner = [A.GaussianBlur(blur_limit=(3, 3), p=0.2),
               A.ImageCompression(quality_range=(50, 95), p=0.3)] if scan else []
    return A.Compose([*_shape(cfg), *_colour(cfg), *scanner, A.Normalize(), ToTensorV2()])


def train_transform(cfg: ClassifyConfig, seed: int | None = None) -> A.Compose:
    """Random crop (with its boxes) of a page already scaled to ``page_size``."""
    height, width = cfg.crop
    lo = max(8, round(height * (1 - cfg.crop_jitter)))
    hi = max(lo, round(height * (1 + cfg.crop_jitter)))
    return A.Compose(
        [
            # Pages smaller than the largest crop are padded with white paper.
            A.PadIfNeeded(
                min_height=hi,
                min_width=math.ceil(hi * width / height) + 1,
                border_mode=cv2.BORDER_CONSTANT,
                fill=255,
            ),
            A.RandomSizedCrop(min_max_height=(lo, hi), size=(height, width),
                              w2h_ratio=width / height),
            *_shape(cfg),
            *_colour(cfg),
            A.Normalize(),
            ToTensorV2(),
        ],
        bbox_params=A.BboxParams(
            format="pascal_voc",
            label_fields=["labels"],
            min_visibility=cfg.min_visible,
            clip=True,
            filter_invalid_bboxes=True,
        ),
        seed=seed,
    )


def page_transform(size: int, *, tensor: bool = True) -> A.Compose:
    """A whole page scaled to ``size`` on its longest side (normalised, as a tensor)."""
    steps = [A.Normalize(), ToTensorV2()] if tensor else []
    return A.Compose([A.LongestMaxSize(max_size=size), *steps])


class CropDataset(torch.utils.data.Dataset):
    """``crops_per_page`` random crops per page; each item is (image, boxes xyxy, targets).

    Boxes whose code is not in the vocabulary (``unk``) are left out. A page that cannot
    be read yields None (the collate drops it) and is listed in ``bad_pages``. ``readers``
    names the dataset of pages that are not in ``data`` (pseudolabelled pages). The last
    ``cache_pages`` pages are kept decoded and scaled (decoding dominates a CPU step).
    """

    def __init__(
        self,
        data: Dataset,
        boxes: Mapping[str, Sequence[Box]],
        image_ids: Sequence[str],
        vocab: Sequence[str],
        cfg: ClassifyConfig,
        *,
        seed: int = 0,
        readers: Mapping[str, Dataset] | None = None,
    ) -> None:
        index = {code: i for i, code in enumerate(vocab)}
        self.seed = seed
        self.readers = dict(readers or {})  # pages whose image is in another dataset
        self.data = data
        self.cfg = cfg
        self.pages: list[tuple[str, np.ndarray, np.ndarray]] = []
        self.ignored = 0
        for image_id in image_ids:
            known = [b for b in boxes.get(image_id, ()) if b.code in index]
            self.ignored += len(boxes.get(image_id, ())) - len(known)
            if not known:
                continue
            xyxy = np.array([b.xyxy for b in known], dtype=np.float32)
            labels = np.array([index[b.code] for b in known], dtype=np.int64)
            self.pages.append((image_id, xyxy, labels))
        self.transform = train_transform(cfg, seed=seed)
        self.resize = page_transform(cfg.page_size, tensor=False)
        self.bad_pages: dict[str, str] = {}
        self._cache: OrderedDict[str, tuple[np.ndarray, np.ndarray]] = OrderedDict()

    def set_epoch(self, epoch: int) -> None:
        """Reseed the augmentations so an epoch is the same after a resume."""
        self.transform.set_random_seed(self.seed * 1000 + epoch)

    def __len__(self) -> int:
        return len(self.pages) * self.cfg.crops_per_page

    def page(self, image_id: str) -> tuple[np.ndarray, np.ndarray]:
        """The page scaled to ``page_size``, and the xyxy factors from the original."""
        if image_id in self._cache:
            self._cache.move_to_end(image_id)
            return self._cache[image_id]
        image = np.asarray(self.readers.get(image_id, self.data).read_image(image_id))
        scaled = self.resize(image=image)["image"]
        fy, fx = scaled.shape[0] / image.shape[0], scaled.shape[1] / image.shape[1]
        entry = scaled, np.array([fx, fy, fx, fy], dtype=np.float32)
        if self.cfg.cache_pages:
            self._cache[image_id] = entry
            while len(self._cache) > self.cfg.cache_pages:
                self._cache.popitem(last=False)
        return entry

    def __getitem__(self, i: int) -> Sample | None:
        image_id, xyxy, labels = self.pages[i // self.cfg.crops_per_page]
        try:
            image, factors = self.page(image_id)
        except (ImageError, KeyError) as exc:
            reason = getattr(exc, "reason", str(exc))
            log.warning("skipping training page %s: %s", image_id, reason)
            self.bad_pages[image_id] = reason
            return None
        out = self.transform(image=image, bboxes=xyxy * factors, labels=labels)
        boxes = torch.as_tensor(np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4))
        targets = torch.as_tensor(np.asarray(out["labels"], dtype=np.int64).reshape(-1))
        return out["image"], boxes, targets


def cap_boxes(counts: Sequence[int], max_boxes: int, bucket: int) -> torch.Tensor:
    """A random mask over a batch's boxes keeping at most ``max_boxes``, rounded down to a
    multiple of ``bucket`` (few distinct head shapes, bounded memory)."""
    total = sum(counts)
    keep = min(total, max_boxes)
    if keep >= bucket:
        keep -= keep % bucket
    mask = torch.zeros(total, dtype=torch.bool)
    mask[torch.randperm(total)[:keep]] = True
    return mask


class Collate:
    """Stacks crops and caps the boxes of the batch; returns None for an empty batch."""

    def __init__(self, max_boxes: int, bucket: int) -> None:
        self.max_boxes = max_boxes
        self.bucket = bucket

    def __call__(
        self, batch: Sequence[Sample | None]
    ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor] | None:
        samples = [s for s in batch if s is not None]
        if not samples:
            return None
        counts = [len(t) for _, _, t in samples]
        masks = cap_boxes(counts, self.max_boxes, self.bucket).split(counts)
        images = torch.stack([img for img, _, _ in samples])
        boxes = [b[m] for (_, b, _), m in zip(samples, masks, strict=True)]
        targets = torch.cat([t[m] for (_, _, t), m in zip(samples, masks, strict=True)])
        return images, boxes, targets


def loader(
    dataset: CropDataset,
    cfg: ClassifyConfig,
    generator: torch.Generator | None = None,
    *,
    pin_memory: bool = False,
) -> torch.utils.data.DataLoader:
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        shuffle=True,
        num_workers=cfg.workers,
        collate_fn=Collate(cfg.max_boxes, cfg.box_bucket),
        generator=generator,
        pin_memory=pin_memory,
    )


def describe(dataset: CropDataset) -> dict[str, Any]:
    """What an epoch reads: its pages (repeated pseudolabelled pages counted each time)."""
    return {
        "pages": len(dataset.pages),
        "boxes": int(sum(len(labels) for _, _, labels in dataset.pages)),
        "ignored_boxes": dataset.ignored,
    }
