"""Detector-like out-of-fold boxes made from a synthetic dataset's ground truth (test aid).

The classifier is trained on a detector's OOF boxes labelled by IoU. Its tests (and the
bench, when no detector run is at hand) need such boxes without training a detector:

- every ground-truth box, its edges jittered, a few of them missed;
- a box over each unannotated distractor the generator drew (glosses beside columns,
  marks, red seals), re-created from the generator's deterministic page layout;
- a few random boxes the size of a character anywhere on the page;

each labelled like the detector's OOF: the code of the ground-truth box it overlaps
with IoU >= 0.5, else ``seg_fp``. ``sources`` says where each box came from.
"""

from __future__ import annotations

import numpy as np
import torch
from torchvision.ops import box_iou

from kzjobs.data.dataset import Dataset
from kzjobs.data.format import SEG_FP, Box

IOU = 0.5


def label_by_iou(candidates: list[tuple[int, int, int, int]], truth: list[Box]) -> list[str]:
    if not truth:
        return [SEG_FP] * len(candidates)
    cand = torch.tensor([(x, y, x + w, y + h) for x, y, w, h in candidates], dtype=torch.float)
    gt = torch.tensor([b.xyxy for b in truth], dtype=torch.float)
    best, index = box_iou(cand, gt).max(dim=1)
    return [truth[i].code if v >= IOU else SEG_FP
            for v, i in zip(best.tolist(), index.tolist(), strict=True)]


def _jitter(rng: np.random.Generator, x: float, y: float, w: float, h: float, sd: float,
            width: int, height: int) -> tuple[int, int, int, int]:
    x0, x1 = x + rng.normal(0, sd * w), x + w + rng.normal(0, sd * w)
    y0, y1 = y + rng.normal(0, sd * h), y + h + rng.normal(0, sd * h)
    x0, y0 = max(0, round(x0)), max(0, round(y0))
    x1, y1 = min(width, round(x1)), min(height, round(y1))
    return x0, y0, max(2, x1 - x0), max(2, y1 - y0)


def oof_like_boxes(
    data: Dataset,
    *,
    synth_seed: int,
    seed: int = 0,
    jitter: float = 0.06,
    miss: float = 0.02,
    random_per_page: int = 4,
    vocabulary_size: int | None = None,
) -> tuple[dict[str, list[Box]], dict[str, list[str]]]:
    """``(boxes, sources)`` per page; ``synth_seed`` is the seed the dataset was made with."""
    from kzjobs.synth.generator import layout_from_meta
    from kzjobs.synth.vocab import load_vocabulary

    rng = np.random.default_rng(seed)
    books = data.store.read_json("books.json")
    vocab = load_vocabulary()
    if vocabulary_size:
        vocab = vocab.most_frequent(vocabulary_size)
    boxes: dict[str, list[Box]] = {}
    sources: dict[str, list[str]] = {}
    for image_id, truth in data.annotations.items():
        book, page = image_id.rsplit("_", 1)
        layout = layout_from_meta(books[book], vocab, synth_seed, int(page))
        if layout.boxes != truth:
            raise ValueError(f"{image_id}: layout does not match train.csv (wrong synth_seed?)")
        width, height = layout.width, layout.height
        cands, kinds = [], []
        for b in truth:
            if rng.random() >= miss:
                cands.append(_jitter(rng, b.x, b.y, b.w, b.h, jitter, width, height))
                kinds.append("char")
        for stamp in layout.extras + layout.seals:
            cands.append(_jitter(rng, stamp.x, stamp.y, stamp.w, stamp.h, jitter, width, height))
            kinds.append(stamp.kind)
        size = float(np.median([b.h for b in truth])) if truth else 40.0
        for _ in range(random_per_page):
            w, h = size * rng.uniform(0.6, 1.4, size=2)
            x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
            cands.append(_jitter(rng, x, y, w, h, 0.0, width, height))
            kinds.append("random")
        codes = label_by_iou(cands, truth)
        boxes[image_id] = [Box(c, *xywh) for c, xywh in zip(codes, cands, strict=True)]
        sources[image_id] = kinds
    return boxes, sources
