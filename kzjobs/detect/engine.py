"""Training and evaluation loops (shaped like torchvision's references/detection)."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence, Sized
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from torchvision.ops import box_iou
from tqdm import tqdm

from kzjobs.core.device import autocast, layout_of
from kzjobs.core.training import EngineSettings, Epoch, Optimization
from kzjobs.data.format import SEG_FP, Box, Point
from kzjobs.detect.config import DetectConfig
from kzjobs.detect.dataset import scale_page, to_tensor
from kzjobs.method.metric import Score, score


@dataclass(frozen=True, slots=True)
class Detection:
    """A detected box in the page's original pixels (integers, x/y top-left)."""

    x: int
    y: int
    w: int
    h: int
    score: float

    @property
    def xyxy(self) -> tuple[int, int, int, int]:
        return self.x, self.y, self.x + self.w, self.y + self.h


def lr_scheduler(optimizer: torch.optim.Optimizer, config: DetectConfig,
                 total_iters: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Linear warm-up, then cosine decay to zero; stepped once per iteration."""
    from torch.optim.lr_scheduler import CosineAnnealingLR, LinearLR, SequentialLR

    warmup = max(1, min(config.warmup_iters, total_iters - 1))
    return SequentialLR(
        optimizer,
        [
            LinearLR(optimizer, start_factor=0.001, total_iters=warmup),
            CosineAnnealingLR(optimizer, T_max=max(1, total_iters - warmup)),
        ],
        milestones=[warmup],
    )


def rcnn_forward(model: torch.nn.Module, images: list[torch.Tensor], device: torch.device, *,
                 amp: bool = True, targets: list[dict[str, torch.Tensor]] | None = None
                 ) -> tuple[Any, list[dict[str, torch.Tensor]], dict[str, torch.Tensor]]:
    """GeneralizedRCNN's forward, split so that only the backbone may run in bf16 on the
    CPU (kzjobs.core.device): the heads regress box coordinates, which bf16 would round by
    pixels. Training and inference share it, so the heads learn on the features they will
    read. Returns the transformed images, the detections in their pixels (none while
    training) and the losses (none in eval mode)."""
    image_list, targets = model.transform(images, targets)
    with autocast(device, amp, cpu_bf16=True):
        features = model.backbone(image_list.tensors.contiguous(memory_format=layout_of(model)))
    features = {name: f.float() for name, f in features.items()}
    with autocast(device, amp):
        proposals, rpn_losses = model.rpn(image_list, features, targets)
        found, head_losses = model.roi_heads(features, proposals, image_list.image_sizes,
                                             targets)
    return image_list, found, {**rpn_losses, **head_losses}


def train_one_epoch(model: torch.nn.Module, optimization: Optimization, loader: Iterable,
                    settings: EngineSettings, epoch: Epoch) -> dict[str, float]:
    """One pass over ``loader``; returns the mean of each loss and the last learning rate.

    ``epoch.tick`` gets the running loss sums, ``steps`` and ``batches`` (those read,
    unreadable ones too) after every step: it checkpoints within a long epoch. A run
    resumed from such a checkpoint has them in ``epoch.running``, with a loader that
    starts after those batches.
    """
    model.train()
    clock = epoch.clock(settings.device)
    sums = dict(epoch.running)
    steps, batches = int(sums.pop("steps", 0)), int(sums.pop("batches", 0))
    bar = tqdm(loader, desc=f"detect epoch {epoch.index}", file=sys.stderr,
               disable=not settings.progress, dynamic_ncols=True, initial=batches,
               total=batches + len(loader) if isinstance(loader, Sized) else None)
    for images, targets in clock.batches(bar):
        batches += 1
        if not images:  # every page of the batch was unreadable
            continue
        images = [img.to(settings.device, non_blocking=True) for img in images]
        targets = [{k: v.to(settings.device) for k, v in t.items()} for t in targets]
        with clock("forward"):
            _, _, losses = rcnn_forward(model, images, settings.device, amp=settings.amp,
                                        targets=targets)
            loss = sum(losses.values())
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"loss is {loss.item()} at epoch {epoch.index}: {losses}")
        optimization.step(model, loss, settings.grad_clip, clock)
        optimization.scheduler.step()
        steps += 1
        for name, value in losses.items():
            sums[name] = sums.get(name, 0.0) + value.item()
        sums["loss"] = sums.get("loss", 0.0) + loss.item()
        bar.set_postfix(loss=f"{sums['loss'] / steps:.3f}", lr=f"{optimization.lr:.4f}")
        epoch.tick(sums | {"steps": steps, "batches": batches} | clock.running())
    metrics = {name: total / max(steps, 1) for name, total in sums.items()}
    metrics["lr"] = optimization.lr
    return metrics | clock.running()


@torch.inference_mode()
def detect_page(model: torch.nn.Module, image: Image.Image, config: DetectConfig,
                device: torch.device, *, amp: bool = True) -> list[Detection]:
    """Boxes on a full page, run at the profile's test scale and mapped back to original
    pixels. A model in channels_last (``load_detector``) reads the page in that layout."""
    model.eval()
    array, scale = scale_page(image, config.test_page_size)
    images, found, _ = rcnn_forward(model, [to_tensor(array).to(device)], device, amp=amp)
    out = model.transform.postprocess(found, images.image_sizes, [tuple(array.shape[:2])])[0]
    boxes = out["boxes"].float().cpu() / scale
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, image.width)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, image.height)
    boxes = boxes.round().to(torch.int64)
    detections = []
    for (x0, y0, x1, y1), s in zip(boxes.tolist(), out["scores"].float().cpu().tolist(),
                                   strict=True):
        if x1 > x0 and y1 > y0:
            detections.append(Detection(x0, y0, x1 - x0, y1 - y0, s))
    return detections


def label_by_iou(detections: Sequence[Detection | Box], truth: Sequence[Box],
                 *, iou: float = 0.5) -> list[Box]:
    """Each detection takes the code of its best-IoU ground-truth box if IoU >= ``iou``,
    else ``seg_fp``: the classifier's targets."""
    if not detections:
        return []
    codes = [SEG_FP] * len(detections)
    if truth:
        ious = box_iou(torch.tensor([d.xyxy for d in detections], dtype=torch.float32),
                       torch.tensor([b.xyxy for b in truth], dtype=torch.float32))
        best, index = ious.max(dim=1)
        for i, (value, j) in enumerate(zip(best.tolist(), index.tolist(), strict=True)):
            if value >= iou:
                codes[i] = truth[j].code
    return [Box(code, d.x, d.y, d.w, d.h) for code, d in zip(codes, detections, strict=True)]


def evaluate(
    model: torch.nn.Module,
    pages: Iterable[tuple[str, Image.Image]],
    truth: Mapping[str, Sequence[Box]],
    config: DetectConfig,
    settings: EngineSettings,
    *,
    on_page: Callable[[str, list[Detection]], None] | None = None,
) -> tuple[dict[str, list[Detection]], Score]:
    """Detect on each page and score the centres with the detection-only competition F1.

    Pages missing from ``pages`` (e.g. unreadable) still count their boxes as misses.
    """
    preds: dict[str, list[Detection]] = {}
    for image_id, image in tqdm(pages, desc="detect eval", file=sys.stderr,
                                disable=not settings.progress, total=len(truth),
                                dynamic_ncols=True):
        preds[image_id] = detect_page(model, image, config, settings.device, amp=settings.amp)
        if on_page is not None:
            on_page(image_id, preds[image_id])
    points = {
        i: [Point("", d.x + d.w / 2, d.y + d.h / 2) for d in dets] for i, dets in preds.items()
    }
    return preds, score(truth, points, ignore_code=True)
