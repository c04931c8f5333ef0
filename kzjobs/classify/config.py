"""Classifier settings of a profile (pydantic only: importing this must stay cheap)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class ClassifyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kinds: tuple[str, ...] = ("resnet18",)
    weights: dict[str, str] = {}  # kind -> user-supplied trunk state_dict path
    page_size: int = 1536
    crop: tuple[int, int] = (512, 384)  # (height, width); varied by ±crop_jitter
    crop_jitter: float = 0.3
    min_visible: float = 0.99
    max_boxes: int = 256
    box_bucket: int = 32
    roi_size: int = 3
    hidden: int = 1024
    dropout: float = 0.5
    epochs: int = 10
    batch_size: int = 4
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    tta_scales: tuple[float, ...] = (1.0,)
    top_k: int = 10
    workers: int = 0
    amp: bool = True
