"""Inference: whole pages with test-time augmentation over scales, top-k classes per box.

Predictions are a parquet table, one row per box, keyed by (image_id, box_id) where
box_id is the box's index in its page's list in the box file. Tables from different
models are joined on that key, never by position (``kzjobs.method.blend``); ``kind`` and
``fold`` name the model.
"""

from __future__ import annotations

import io
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from kzjobs.classify.config import ClassifyConfig
from kzjobs.classify.dataset import page_transform
from kzjobs.classify.model import STRIDE
from kzjobs.core.device import autocast, layout_of
from kzjobs.core.images import ImageError
from kzjobs.core.store import Store, UnsafeKeyError, join, key_name
from kzjobs.data.dataset import Dataset
from kzjobs.data.format import SEG_FP, Box, Point

log = logging.getLogger(__name__)

SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("box_id", pa.int32()),
        ("x", pa.int32()),
        ("y", pa.int32()),
        ("w", pa.int32()),
        ("h", pa.int32()),
        ("classes", pa.list_(pa.string())),
        ("logits", pa.list_(pa.float32())),
        ("kind", pa.string()),
        ("fold", pa.int32()),
    ]
)


def page_scale(boxes: Sequence[Box], height: int, width: int, *, page_size: int,
               char_size: float, limits: tuple[float, float]) -> float:
    """The factor that brings the page's median box (sqrt(w*h), at ``page_size``) to
    ``char_size`` px, clipped to ``limits``; 1 when ``char_size`` is 0 or nothing is boxed."""
    sides = [math.sqrt(b.w * b.h) for b in boxes if b.w > 0 and b.h > 0]
    if not char_size or not sides:
        return 1.0
    median = float(np.median(sides)) * page_size / max(height, width)
    return min(limits[1], max(limits[0], char_size / median))


def text_block(page: torch.Tensor, xyxy: torch.Tensor, margin: int
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """The part of a ``(3, h, w)`` page that holds the boxes and ``margin`` px around
    them, and the boxes moved into it. Its top-left corner is on the trunk's
    :data:`~kzjobs.classify.model.STRIDE` grid, so each feature cell covers the same
    pixels as on the whole page."""
    _, height, width = page.shape
    x0, y0 = ((xyxy[:, :2].amin(0) - margin).clamp(min=0) // STRIDE * STRIDE).int().tolist()
    x1 = min(width, math.ceil(float(xyxy[:, 2].max()) + margin))
    y1 = min(height, math.ceil(float(xyxy[:, 3].max()) + margin))
    return page[:, y0:y1, x0:x1], xyxy - torch.tensor([x0, y0, x0, y0], dtype=xyxy.dtype)


def page_inputs(
    image: np.ndarray,
    boxes: Sequence[Box],
    cfg: ClassifyConfig,
    *,
    page_size: int | None = None,
    scales: Sequence[float] | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """What a classifier reads of one page with boxes: per TTA scale (each times
    :func:`page_scale` when ``cfg.char_size`` is set), the ``(3, h, w)`` page tensor (only
    its text block with ``cfg.read_margin``) and the boxes as xyxy in its pixels."""
    page_size = page_size or cfg.page_size
    height, width = image.shape[:2]
    factor = page_scale(boxes, height, width, page_size=page_size, char_size=cfg.char_size,
                        limits=cfg.char_scale_range)
    xyxy = torch.tensor([b.xyxy for b in boxes], dtype=torch.float32)
    for scale in (s * factor for s in scales or cfg.tta_scales):
        tensor = page_transform(round(page_size * scale))(image=image)["image"]
        fx, fy = tensor.shape[2] / width, tensor.shape[1] / height
        scaled = xyxy * torch.tensor([fx, fy, fx, fy])
        if cfg.read_margin:
            tensor, scaled = text_block(tensor, scaled, cfg.read_margin)
        yield tensor, scaled


def predict_logits(
    model: torch.nn.Module,
    image: np.ndarray,
    boxes: Sequence[Box],
    cfg: ClassifyConfig,
    *,
    device: torch.device,
    page_size: int | None = None,
    scales: Sequence[float] | None = None,
) -> torch.Tensor:
    """``(len(boxes), classes)`` logits of one page, averaged over the TTA scales
    (:func:`page_inputs`). ``page_size`` (the classifier's own) and ``scales`` default to
    the profile's."""
    n_classes = model.head[-1].out_features
    if not boxes:
        return torch.zeros(0, n_classes)
    layout = layout_of(model)  # a model loaded for inference reads channels_last
    total = torch.zeros(len(boxes), n_classes)
    reads = 0
    for tensor, scaled in page_inputs(image, boxes, cfg, page_size=page_size, scales=scales):
        batch = tensor[None].to(device).contiguous(memory_format=layout)
        with torch.inference_mode(), autocast(device, cfg.amp, cpu_bf16=True):
            logits = model(batch, [scaled.to(device)])
        total += logits.float().cpu()
        reads += 1
    return total / reads


def page_table(
    image_id: str,
    boxes: Sequence[Box],
    logits: torch.Tensor,
    vocab: Sequence[str],
    *,
    top_k: int,
    kind: str,
    fold: int,
) -> pa.Table:
    k = min(top_k, len(vocab))
    values, index = logits.topk(k, dim=1) if len(boxes) else (logits[:, :0], logits[:, :0].long())
    n = len(boxes)
    return pa.table(
        {
            "image_id": [image_id] * n,
            "box_id": list(range(n)),
            "x": [b.x for b in boxes],
            "y": [b.y for b in boxes],
            "w": [b.w for b in boxes],
            "h": [b.h for b in boxes],
            "classes": [[vocab[j] for j in row] for row in index.tolist()],
            "logits": values.tolist(),
            "kind": [kind] * n,
            "fold": [fold] * n,
        },
        schema=SCHEMA,
    )


def table_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def read_table(data: bytes) -> pa.Table:
    table = pq.read_table(io.BytesIO(data))
    missing = [n for n in SCHEMA.names if n not in table.column_names]
    if missing:
        raise ValueError(f"not a classifier prediction table: missing columns {missing}")
    return table


def empty_table() -> pa.Table:
    return SCHEMA.empty_table()


def predict_pages(
    model: torch.nn.Module,
    vocab: Sequence[str],
    data: Dataset,
    boxes: Mapping[str, Sequence[Box]],
    image_ids: Sequence[str],
    *,
    cfg: ClassifyConfig,
    device: torch.device,
    kind: str,
    fold: int,
    scales: Sequence[float] | None = None,
    store: Store | None = None,
    out: str | None = None,
    progress: bool = True,
) -> tuple[pa.Table, dict[str, str]]:
    """Predict every page; returns (table, {image_id: quarantine reason}).

    With ``store`` and ``out``, each page is written as it finishes under ``<out>.parts/``
    and a re-run predicts only the pages still missing; at the end the parts are merged
    into ``out`` and removed. A page that cannot be read is quarantined and the job goes on.
    """
    scales = tuple(scales or cfg.tta_scales)
    resumable = store is not None and bool(out)
    parts = f"{out}.parts" if resumable else ""
    tables: list[pa.Table] = []
    done: set[str] = set()
    if resumable and store.exists(out):
        tables.append(read_table(store.read_bytes(out)))
        done.update(tables[-1].column("image_id").to_pylist())
    if resumable:
        for key in store.list(parts):
            tables.append(read_table(store.read_bytes(key)))
            done.add(key_name(key).removesuffix(".parquet"))
    quarantine: dict[str, str] = {}
    model.eval()
    todo = [i for i in image_ids if i not in done]
    for image_id in tqdm(todo, desc=f"classify {kind}", disable=not progress):
        page_boxes = list(boxes.get(image_id, ()))
        try:
            part_key = join(parts, f"{image_id}.parquet") if resumable else ""
            image = np.asarray(data.read_image(image_id))
        except (ImageError, KeyError, UnsafeKeyError) as exc:
            reason = getattr(exc, "reason", None) or str(exc).strip("'\"")
            log.warning("quarantined page %s: %s", image_id, reason)
            quarantine[image_id] = reason
            continue
        logits = predict_logits(model, image, page_boxes, cfg, device=device, scales=scales)
        table = page_table(image_id, page_boxes, logits, vocab, top_k=cfg.top_k, kind=kind,
                           fold=fold)
        if resumable:
            store.write_bytes(part_key, table_bytes(table))
        tables.append(table)
    table = pa.concat_tables([empty_table(), *tables])
    table = table.filter(pc.is_in(table["image_id"], pa.array(list(image_ids), pa.string())))
    table = table.sort_by([("image_id", "ascending"), ("box_id", "ascending")])
    if resumable:
        store.write_bytes(out, table_bytes(table))
        for key in store.list(parts):
            store.delete(key)
    return table, quarantine


def to_points(table: Any, *, drop: str = SEG_FP) -> dict[str, list[Point]]:
    """Each box's best class at the box centre; boxes whose best class is ``seg_fp`` go.

    ``table`` is a prediction table (pyarrow) or frame (pandas, e.g. a blend).
    """
    names = ["image_id", "x", "y", "w", "h", "classes"]
    if isinstance(table, pa.Table):
        cols = table.select(names).to_pydict()
    else:
        cols = {n: table[n] for n in names}
    points: dict[str, list[Point]] = {}
    for image_id, x, y, w, h, classes in zip(*cols.values(), strict=True):
        page = points.setdefault(image_id, [])
        if len(classes) and classes[0] != drop:
            page.append(Point(classes[0], x + w / 2, y + h / 2))
    return points
