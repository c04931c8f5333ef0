"""Detector settings of a profile (pydantic only: importing this must stay cheap)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Backbone = Literal[
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "mobilenet_v3_large"
]


class DetectConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # The model: a Faster R-CNN with an FPN backbone, two classes (background, character).
    backbone: Backbone = "resnet18"
    weights: str | None = None  # a user-supplied detector state_dict path; nothing is downloaded
    backbone_weights: str | None = None  # a user-supplied backbone (trunk) state_dict path
    trainable_layers: int | None = None  # None: all (training from scratch)
    returned_layers: tuple[int, ...] | None = None  # backbone stages fed to the FPN
    fpn_channels: int = 256
    box_head_size: int = 1024  # width of the two-layer box head
    # One size per FPN level when the counts match, else every size on every level.
    anchor_sizes: tuple[int, ...] = (12, 24, 32, 64, 96)
    anchor_ratios: tuple[float, ...] = (0.5, 1.0, 2.0)
    roi_batch_size: int = 512  # sampled proposals per training image
    proposals_test: int = 2000  # RPN proposals kept per page at inference
    nms_iou: float = 0.25
    score_threshold: float = 0.5
    detections_per_image: int = Field(1200, ge=1000)

    # Pages: the dataset sets the scale (longest side in px), not torchvision's transform.
    page_size: int = 1024
    crop: tuple[int, int] = (384, 512)  # (height, width) of random training crops
    crops_per_page: int = 1  # random crops of each training page per epoch
    scale_range: tuple[float, float] = (0.8, 1.2)  # crops see the page scaled by this much
    # Inference reads pages at page_size x test_scale. Below 1 is faster (the backbone's
    # cost goes with the pixels); it must stay in scale_range, the sizes training saw.
    test_scale: float = Field(1.0, gt=0.0)
    min_visible: float = 0.5  # a cut box is kept if at least this much of it is in the crop

    # Training: SGD with momentum, linear warm-up then a cosine schedule (per iteration).
    epochs: int = 10
    batch_size: int = 4
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iters: int = 100
    grad_clip: float | None = 10.0  # from-scratch training spikes early; clip the norm
    # A checkpoint within an epoch at most this often (0: at epoch ends only), so that a
    # crash loses at most this much training: the bench profile's one epoch takes from 15
    # minutes to over 40 on two CPU cores.
    checkpoint_seconds: float = Field(600.0, ge=0.0)
    workers: int = 0
    amp: bool = True  # fp16 on CUDA; a bf16 backbone on CPUs doing bf16 (kzjobs.core.device)
    threads: int = 0  # torch CPU threads; 0 keeps torch's default (OMP_NUM_THREADS)
    seed: int = 0

    @model_validator(mode="after")
    def _enough_proposals(self) -> DetectConfig:
        # each detection comes from a proposal: fewer proposals cap the detections
        if self.proposals_test < self.detections_per_image:
            raise ValueError(
                f"proposals_test ({self.proposals_test}) must be at least "
                f"detections_per_image ({self.detections_per_image})"
            )
        return self

    @model_validator(mode="after")
    def _test_scale_was_trained(self) -> DetectConfig:
        low, high = self.scale_range
        if not low <= self.test_scale <= high:
            raise ValueError(
                f"test_scale {self.test_scale} is outside scale_range {self.scale_range}: "
                "the detector never saw characters at that size"
            )
        return self

    @property
    def test_page_size(self) -> int:
        """The longest page side, in px, that inference reads."""
        return max(1, round(self.page_size * self.test_scale))
