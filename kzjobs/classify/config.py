"""Classifier settings of a profile (pydantic only: importing this must stay cheap)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

# torchvision ResNet trunks the classifier accepts by name (layer4 and fc are dropped).
KINDS = (
    "resnet18",
    "resnet34",
    "resnet50",
    "resnet101",
    "resnet152",
    "resnext50_32x4d",
    "resnext101_32x8d",
    "wide_resnet50_2",
)
TRUNK_PARTS = ("conv1", "bn1", "layer1", "layer2", "layer3")


class ClassifyConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kinds: tuple[str, ...] = ("resnet18",)
    # kind -> path of a user-supplied torchvision-style state_dict (e.g. WSL weights);
    # nothing is ever downloaded.
    weights: dict[str, str] = {}
    page_size: int = 1536  # longest page side in px, for training crops and inference
    crop: tuple[int, int] = (512, 384)  # (height, width) of a training crop
    crop_jitter: float = Field(0.3, ge=0.0, lt=1.0)  # crop side varied by ±this, then resized
    crops_per_page: int = Field(1, ge=1)  # random crops drawn from each page per epoch
    min_visible: float = Field(0.99, gt=0.0, le=1.0)  # keep a box if this much is in the crop
    max_boxes: int = Field(256, ge=2)  # boxes per batch are capped ...
    box_bucket: int = Field(32, ge=1)  # ... and rounded down to a multiple of this
    roi_size: int = 3
    hidden: int = 1024
    dropout: float = 0.5
    frozen: tuple[str, ...] = ("conv1", "bn1", "layer1")  # no grad, BatchNorm in eval mode
    epochs: int = Field(10, ge=1)
    batch_size: int = Field(4, ge=1)
    optimizer: Literal["sgd", "adamw"] = "sgd"  # SGD with momentum, or AdamW (decoupled decay)
    lr: float = 0.01
    momentum: float = 0.9  # SGD only
    weight_decay: float = 1e-4
    amp: bool = True  # fp16 on CUDA; bf16 on CPUs that do bf16 in hardware (kzjobs.core.device)
    # Fine-tuning a trained model (``--init``, e.g. with pseudolabels): the seed ran 5
    # epochs (against 50 from scratch) at a tenth of the learning rate.
    finetune_epochs: int = Field(5, ge=1)
    finetune_lr_factor: float = Field(0.1, gt=0)
    # The share of a training epoch's pages that are pseudolabelled pages, which are
    # repeated to reach it (0: each page once). The seed's incoming test set was as large
    # as its training set, about 0.5; an incoming batch smaller than that is diluted.
    pseudo_share: float = Field(0.0, ge=0.0, lt=1.0)
    seed: int = 0
    # Seconds between checkpoints within an epoch (0: at epoch ends only); a resumed run
    # ends with the same model as one never stopped.
    checkpoint_seconds: float = Field(600.0, ge=0.0)
    eval_every: int = 0  # validate on full pages every N epochs (0: after the last only)
    tta_scales: tuple[float, ...] = (1.0,)
    # Read each page at the scale that brings the median of its boxes (sqrt(w*h) at
    # page_size) to char_size px, within char_scale_range: books differ in character
    # size, and small characters fall on few feature cells. 0: every page at page_size.
    # Training pages keep their book's own scale: scaling them too narrowed the sizes
    # seen in training and lost (bench/RESULTS.md, 'Run of 2026-12-03 13:51 UTC').
    char_size: float = Field(0.0, ge=0.0)
    char_scale_range: tuple[float, float] = (0.5, 2.0)
    # Read only the block of the page that holds its boxes, this many px (at the read
    # scale) around them: the trunk's time over blank margins is wasted. 0: whole pages.
    read_margin: int = Field(0, ge=0)
    # Folds of each kind that read a page at inference (0: every fold). Each is a trunk
    # pass over the page; level 2 learnt from out-of-fold logits, which are one fold's.
    inference_folds: int = Field(0, ge=0)
    # Read pages on the CPU with each classifier's trunk in int8 (kzjobs.classify.quantize;
    # x86 only, float elsewhere). The bundle job then calibrates and stores the trunks, on
    # this many training pages spread over the books.
    int8_trunk: bool = False
    int8_calibration_pages: int = Field(8, ge=1)
    top_k: int = Field(10, ge=1)  # classes kept per box in the predictions (>= 10 in profiles)
    workers: int = 0
    cache_pages: int = Field(0, ge=0)  # decoded, scaled training pages kept per loader process
    # torch CPU threads (0: torch's default). On a shared CPU one thread per job is much
    # faster than two fighting over oversubscribed cores.
    threads: int = Field(0, ge=0)
    augment: bool = True  # HSV, brightness/contrast, gamma
    # A hand's variety, in training crops only: with this probability each, an elastic
    # warp of the ink (albumentations' alpha and sigma, px of the crop) and strokes
    # thickened or thinned by a 2-3 px kernel. 0: off.
    shape_p: float = Field(0.0, ge=0.0, le=1.0)
    warp_alpha: float = Field(120.0, ge=0.0)
    warp_sigma: float = Field(6.0, gt=0.0)

    @field_validator("kinds")
    @classmethod
    def _known_kinds(cls, kinds: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [k for k in kinds if k not in KINDS]
        if unknown:
            raise ValueError(f"unknown classifier kinds {unknown}; use some of {KINDS}")
        return kinds

    @field_validator("frozen")
    @classmethod
    def _known_parts(cls, frozen: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [p for p in frozen if p not in TRUNK_PARTS]
        if unknown:
            raise ValueError(f"cannot freeze {unknown}; parts are {TRUNK_PARTS}")
        return frozen

    @field_validator("char_scale_range")
    @classmethod
    def _a_range(cls, limits: tuple[float, float]) -> tuple[float, float]:
        if not 0 < limits[0] <= limits[1]:
            raise ValueError("char_scale_range must be (low, high) with 0 < low <= high")
        return limits

    @field_validator("tta_scales")
    @classmethod
    def _some_scales(cls, scales: tuple[float, ...]) -> tuple[float, ...]:
        if not scales or any(s <= 0 for s in scales):
            raise ValueError("tta_scales must be one or more positive factors")
        return scales
