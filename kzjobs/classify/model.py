"""The ROI classifier: a ResNet trunk up to layer3 and a head over roi_align features.

Each frozen box is read from layer2 and layer3 with ``roi_align`` (3x3 each); the two
are flattened and concatenated (13,824 features for a ResNet-50-wide trunk), then
dropout -> Linear(1024) -> ReLU -> dropout -> BatchNorm1d -> Linear(classes + seg_fp).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torchvision
from torch import nn
from torchvision.ops import roi_align

from kzjobs.classify.config import KINDS, TRUNK_PARTS


def _out_channels(layer: nn.Sequential) -> int:
    block = layer[-1]  # the last block has no downsample: its last BatchNorm is the output
    norms = [m for m in block.children() if isinstance(m, nn.BatchNorm2d)]
    return norms[-1].num_features


# layer3's stride, the trunk's coarsest, for every kind in KINDS.
STRIDE = 16


def feature_scale(feature: int, image: int) -> float:
    """The feature map's scale, the power of two nearest ``feature / image`` (as
    torchvision's ``MultiScaleRoIAlign`` infers it). The plain ratio is off wherever the
    image side is not a multiple of the stride: a 1,400 px page has 88 cells of 16 px at
    layer3, and 88/1400 would put a box at its right edge half a cell off."""
    return 2.0 ** round(math.log2(feature / image))


def pool_boxes(maps: Sequence[torch.Tensor], boxes: list[torch.Tensor], roi_size: int,
               image_width: int) -> torch.Tensor:
    """Each box read from each feature map with ``roi_align`` (``roi_size`` squared cells),
    flattened and concatenated: ``(sum of boxes, n_features)``."""
    pooled = [
        roi_align(
            feat,
            boxes,
            output_size=roi_size,
            spatial_scale=feature_scale(feat.shape[-1], image_width),
            sampling_ratio=2,
            aligned=True,
        ).flatten(1)
        for feat in maps
    ]
    return torch.cat(pooled, dim=1)


class RoIClassifier(nn.Module):
    def __init__(
        self,
        kind: str,
        n_classes: int,
        *,
        roi_size: int = 3,
        hidden: int = 1024,
        dropout: float = 0.5,
        frozen: Sequence[str] = ("conv1", "bn1", "layer1"),
    ) -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown classifier kind {kind!r}; use one of {KINDS}")
        trunk = torchvision.models.get_model(kind, weights=None)
        # Same attribute names as torchvision's ResNet, so its state_dicts load as they are.
        self.conv1, self.bn1, self.relu, self.maxpool = (
            trunk.conv1, trunk.bn1, trunk.relu, trunk.maxpool
        )
        self.layer1, self.layer2, self.layer3 = trunk.layer1, trunk.layer2, trunk.layer3
        self.kind = kind
        self.roi_size = roi_size
        self.frozen = tuple(frozen)
        n_features = (_out_channels(self.layer2) + _out_channels(self.layer3)) * roi_size**2
        self.n_features = n_features
        self.head = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(n_features, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.BatchNorm1d(hidden),
            nn.Linear(hidden, n_classes),
        )
        for name in self.frozen:
            getattr(self, name).requires_grad_(False)
        self.train()

    def train(self, mode: bool = True) -> RoIClassifier:
        super().train(mode)
        for name in self.frozen:  # frozen parts keep their BatchNorm statistics
            getattr(self, name).eval()
        return self

    def trunk(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """layer2's and layer3's feature maps."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        c2 = self.layer2(self.layer1(x))
        return c2, self.layer3(c2)

    def features(self, images: torch.Tensor, boxes: list[torch.Tensor]) -> torch.Tensor:
        """``(sum of boxes, n_features)`` for xyxy boxes in input pixels, one tensor per image."""
        return pool_boxes(self.trunk(images), boxes, self.roi_size, images.shape[-1])

    def forward(self, images: torch.Tensor, boxes: list[torch.Tensor]) -> torch.Tensor:
        return self.head(self.features(images, boxes))

    def load_trunk(self, path: str, store: Any = None) -> dict[str, Any]:
        """Load a torchvision-style ResNet trunk (layer4/fc and others are ignored) from
        a weights reference (:mod:`kzjobs.pretrain.weights`: a path, a shipped name, a
        registered version or a store key); the whole file, for :func:`start_from`."""
        from kzjobs.pretrain.weights import read_weights, state_dict_of

        saved = read_weights(path, store)
        state = state_dict_of(saved)
        trunk = {k: v for k, v in state.items() if k.split(".")[0] in TRUNK_PARTS}
        if not trunk:
            raise ValueError(f"{path}: no ResNet trunk weights (conv1, layer1..3) in this file")
        missing, unexpected = self.load_state_dict(trunk, strict=False)
        missing = [k for k in missing if not k.startswith("head.")]
        if missing or unexpected:
            raise ValueError(
                f"{path}: weights do not fit a {self.kind} trunk "
                f"(missing {missing[:5]}, unexpected {unexpected[:5]})"
            )
        return saved if isinstance(saved, dict) else {}


def start_from(model: RoIClassifier, ref: str, vocabulary: Sequence[str],
               store: Any = None) -> int:
    """Start ``model`` from the weights at ``ref``: the trunk; and the head too when
    the file is a pretrained classifier (``kzjobs pretrain``) of the same head size, its
    class rows matched to ``vocabulary`` by code. Classes it never saw (``seg_fp``
    among them) keep their random start. The number of classes taken over."""
    saved = model.load_trunk(ref, store)
    codes = saved.get("vocabulary") if isinstance(saved.get("vocabulary"), list) else None
    state = saved.get("state_dict") or {}
    head = {k: v for k, v in state.items() if k.startswith("head.")}
    last = f"head.{len(model.head) - 1}"
    mine = model.state_dict()
    if not codes or any(k not in mine or (mine[k].shape != v.shape and not k.startswith(last))
                        for k, v in head.items()):
        return 0
    rows = {code: i for i, code in enumerate(codes)}
    pairs = [(j, rows[c]) for j, c in enumerate(vocabulary) if c in rows]
    with torch.no_grad():
        for key, value in head.items():
            if key.startswith(last):  # the class rows: by code
                target = mine[key]
                for j, i in pairs:
                    target[j] = value[i]
            else:
                mine[key].copy_(value)
    return len(pairs)


def model_args(kind: str, n_classes: int, cfg: Any) -> dict[str, Any]:
    """Plain data that rebuilds the model (saved in the checkpoint)."""
    return {
        "kind": kind,
        "n_classes": n_classes,
        "roi_size": cfg.roi_size,
        "hidden": cfg.hidden,
        "dropout": cfg.dropout,
        "frozen": list(cfg.frozen),
    }


def build_model(args: dict[str, Any]) -> RoIClassifier:
    args = dict(args)
    return RoIClassifier(args.pop("kind"), args.pop("n_classes"), **args)


def trained_model(checkpoint: dict[str, Any]) -> RoIClassifier:
    """The classifier a checkpoint holds, as built (batch norms kept), on the CPU."""
    model = build_model(checkpoint["model_args"])
    model.load_state_dict(checkpoint["model"])
    return model


def load_model(checkpoint: dict[str, Any], device: torch.device | None = None
               ) -> tuple[RoIClassifier, list[str]]:
    """The model ready for inference on ``device`` (default the CPU): eval mode,
    channels_last (``kzjobs.core.device.for_inference``; the bench blend's two classifiers 0.62
    s a page against 0.87 in NCHW, ``bench.inference``), and its vocabulary (class codes,
    ``seg_fp`` included)."""
    from kzjobs.core.device import for_inference

    model = trained_model(checkpoint)
    return for_inference(model, device or torch.device("cpu")), list(checkpoint["vocabulary"])
