"""Detector settings of a profile (pydantic only: importing this must stay cheap)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class DetectConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backbone: str = "resnet18"
    weights: str | None = None  # a user-supplied state_dict path; nothing is downloaded
    page_size: int = 1024  # longest page side, in px, for training and inference
    crop: tuple[int, int] = (384, 512)  # (height, width) of random training crops
    empty_crop_fraction: float = 0.1
    min_visible: float = 0.5
    anchor_sizes: tuple[int, ...] = (12, 24, 48, 96, 192)
    anchor_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    nms_iou: float = 0.25
    score_threshold: float = 0.5
    detections_per_image: int = 1200
    epochs: int = 10
    batch_size: int = 4
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iters: int = 100
    workers: int = 0
    amp: bool = True
