"""The optimizer, one training epoch, and the evaluation of a model's predictions on
held-out pages."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pyarrow as pa
import torch
import torch.nn.functional as F
from tqdm import tqdm

from kzjobs.classify.config import ClassifyConfig
from kzjobs.classify.predict import to_points
from kzjobs.core.device import autocast
from kzjobs.core.training import EngineSettings, Epoch, Optimization
from kzjobs.data.format import SEG_FP, Box
from kzjobs.method.metric import score


def make_optimizer(params: Sequence[torch.nn.Parameter], cfg: ClassifyConfig
                   ) -> torch.optim.Optimizer:
    """The profile's optimizer (``classify.optimizer``) over the trainable parameters."""
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                           weight_decay=cfg.weight_decay)


def train_one_epoch(model: torch.nn.Module, optimization: Optimization, loader: Iterable,
                    settings: EngineSettings, epoch: Epoch) -> dict[str, float]:
    """Cross-entropy over every kept box; the LR schedule steps per batch.

    ``epoch.tick`` gets the running sums after every batch (``loss_sum``, ``correct``,
    ``seen``, ``batches`` trained and ``consumed`` loader items): it checkpoints within a
    long epoch. A run resumed from such a checkpoint has them in ``epoch.running``, with a
    loader that starts after the items consumed.
    """
    model.train()
    clock = epoch.clock(settings.device)
    sums = {"loss_sum": 0.0, "correct": 0, "seen": 0, "batches": 0, "consumed": 0,
            **epoch.running}
    bar = tqdm(loader, desc=f"epoch {epoch.index}", disable=not settings.progress,
               leave=False, initial=int(sums["consumed"]))
    for batch in clock.batches(bar):
        sums["consumed"] += 1
        # BatchNorm1d in the head needs two boxes or more
        if batch is not None and len(batch[2]) >= 2:
            images, boxes, targets = batch
            images = images.to(settings.device, non_blocking=True)
            boxes = [b.to(settings.device, non_blocking=True) for b in boxes]
            targets = targets.to(settings.device, non_blocking=True)
            # a class score, not a coordinate: bf16 on a CPU that does it in hardware
            with clock("forward"), autocast(settings.device, settings.amp, cpu_bf16=True):
                logits = model(images, boxes)
                loss = F.cross_entropy(logits.float(), targets)
            if not math.isfinite(loss.item()):
                raise FloatingPointError(
                    f"loss is {loss.item()} at epoch {epoch.index}; lower the lr")
            optimization.step(model, loss, settings.grad_clip, clock)
            n = len(targets)
            sums["loss_sum"] += loss.item() * n
            sums["correct"] += int((logits.argmax(1) == targets).sum())
            sums["seen"] += n
            sums["batches"] += 1
            bar.set_postfix(loss=f"{sums['loss_sum'] / sums['seen']:.3f}",
                            acc=f"{sums['correct'] / sums['seen']:.3f}")
        optimization.scheduler.step()
        epoch.tick(sums | clock.running())
    seen = sums["seen"]
    return {
        "loss": sums["loss_sum"] / seen if seen else float("nan"),
        "accuracy": sums["correct"] / seen if seen else 0.0,
        "boxes": seen,
        "batches": sums["batches"],
        "lr": optimization.lr,
    } | clock.running()


def judged_boxes(predictions: pa.Table, boxes: Mapping[str, Sequence[Box]]
                 ) -> list[tuple[str, int, str, str]]:
    """``(image_id, box_id, label, predicted)`` for every predicted box with a label."""
    cols = predictions.select(["image_id", "box_id", "classes"]).to_pydict()
    judged = []
    for image_id, box_id, classes in zip(*cols.values(), strict=True):
        page = boxes.get(image_id, ())
        if box_id < len(page) and len(classes):
            judged.append((image_id, box_id, page[box_id].code, classes[0]))
    return judged


def evaluate(
    predictions: pa.Table,
    boxes: Mapping[str, Sequence[Box]],
    truth: Mapping[str, Sequence[Box]],
    image_ids: Sequence[str],
    *,
    names: Mapping[str, str] | None = None,
    frequent: int = 20,
) -> dict[str, Any]:
    """Metrics of predictions on held-out pages.

    - box accuracy against the box file's labels (detector boxes labelled by IoU), with
      the majority-label accuracy on the same boxes as the honest baseline;
    - ``seg_fp`` recall (false boxes rejected) and precision;
    - the competition F1 against the true ground truth of ``image_ids`` (so detector
      misses count), overall and per book; a box predicted ``seg_fp`` is dropped;
    - a confusion summary of the ``frequent`` most common labels.
    """
    names = names or {}
    pairs = [(label, pred) for _, _, label, pred in judged_boxes(predictions, boxes)]
    labels = Counter(label for label, _ in pairs)
    n = len(pairs)
    correct = sum(label == pred for label, pred in pairs)
    fp_true = sum(label == SEG_FP for label, _ in pairs)
    fp_pred = sum(pred == SEG_FP for _, pred in pairs)
    fp_hit = sum(label == pred == SEG_FP for label, pred in pairs)
    chars = [(label, pred) for label, pred in pairs if label != SEG_FP]
    char_labels = Counter(label for label, _ in chars)
    f1 = score({i: truth.get(i, ()) for i in image_ids}, to_points(predictions))
    confusion = []
    for code, count in labels.most_common(frequent):
        preds = Counter(pred for label, pred in pairs if label == code)
        confusion.append(
            {
                "code": code,
                "char": names.get(code, code),
                "boxes": count,
                "accuracy": preds[code] / count,
                "predicted_as": [
                    {"code": p, "char": names.get(p, p), "boxes": c}
                    for p, c in preds.most_common(4)
                    if p != code
                ][:3],
            }
        )
    return {
        "boxes": n,
        "accuracy": correct / n if n else 0.0,
        "majority_accuracy": labels.most_common(1)[0][1] / n if n else 0.0,
        "char_accuracy": sum(a == b for a, b in chars) / len(chars) if chars else 0.0,
        "char_majority_accuracy": (
            char_labels.most_common(1)[0][1] / len(chars) if chars else 0.0
        ),
        "seg_fp_boxes": fp_true,
        "seg_fp_recall": fp_hit / fp_true if fp_true else 1.0,
        "seg_fp_precision": fp_hit / fp_pred if fp_pred else 1.0,
        "f1": f1.f1,
        "score": f1.as_dict(by_book=True),
        "confusion": confusion,
    }
