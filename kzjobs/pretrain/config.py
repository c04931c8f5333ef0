"""Pretraining settings of a profile (pydantic only: importing this must stay cheap)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

# Where kz_retrain keeps pretrained starting weights, across its runs (the train role's
# part of the store): ``<PRETRAINED>/<kind>.pt``.
PRETRAINED = "runs/retrain/pretrained"


class PretrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kinds: tuple[str, ...] = ("resnet18",)  # the classifier kinds to pretrain
    # Font ids to render (None: the training fonts, kzjobs.synth.fonts.split("train")):
    # the fonts kept for dev and test books are never seen.
    fonts: tuple[str, ...] | None = None
    vocabulary_size: int | None = Field(None, ge=1)  # the N most frequent (None: all)
    # Character size in px at the classifier's page scale: synthetic pages read at
    # page_size 1,024 px hold characters of about 20 to 60 px.
    char_size: tuple[int, int] = (20, 56)
    crop: tuple[int, int] = (96, 64)  # (height, width) of a crop: a column snippet
    steps: int = Field(600, ge=1)
    batch_size: int = Field(64, ge=1)
    lr: float = 2e-3  # AdamW, one-cycle schedule
    weight_decay: float = 0.05
    shape_p: float = Field(0.3, ge=0.0, le=1.0)  # elastic warp and stroke width, each
    amp: bool = True  # bf16 autocast on CPUs doing bf16 in hardware (kzjobs.core.device)
    half: bool = True  # stored in fp16 (half the size); loading upcasts
    threads: int = Field(0, ge=0)
    workers: int = Field(0, ge=0)
    eval_samples: int = Field(512, ge=0)  # rendered with another seed: top-1 accuracy
    seed: int = 0
