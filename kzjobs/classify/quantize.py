"""An int8 trunk for the ROI classifier, for x86 CPUs that read in fp32 (no bf16).

The trunk (conv1 to layer3, where nearly all of a page's classifier time goes) is
quantized after training with PyTorch's FX static quantization on its x86 backend:
int8 weights per output channel, activation ranges observed on calibration pages, batch
norms fused into the convolutions. ``roi_align`` and the head stay in fp32. On one AVX2
core it reads a bench page in about 0.6 of the fp32 time (``python -m bench.int8``,
bench/RESULTS.md); the F1 it costs is measured there too, on a trained classifier.

Not yet a profile setting: the bench run that would judge it end to end is to come.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch import nn

from kzjobs.classify.model import RoIClassifier, pool_boxes


class _Trunk(nn.Module):
    """The classifier's trunk alone, as a module FX can trace."""

    def __init__(self, model: RoIClassifier) -> None:
        super().__init__()
        self.conv1, self.bn1, self.relu, self.maxpool = (
            model.conv1, model.bn1, model.relu, model.maxpool)
        self.layer1, self.layer2, self.layer3 = model.layer1, model.layer2, model.layer3

    forward = RoIClassifier.trunk


class Int8Classifier(nn.Module):
    """A classifier whose trunk reads in int8; called as :class:`RoIClassifier` is."""

    def __init__(self, trunk: nn.Module, head: nn.Module, roi_size: int) -> None:
        super().__init__()
        self.quantized_trunk, self.head, self.roi_size = trunk, head, roi_size

    def forward(self, images: torch.Tensor, boxes: list[torch.Tensor]) -> torch.Tensor:
        maps = self.quantized_trunk(images.contiguous())
        return self.head(pool_boxes(maps, boxes, self.roi_size, images.shape[-1]))


def quantize_classifier(model: RoIClassifier, pages: Iterable[torch.Tensor]) -> Int8Classifier:
    """An int8-trunk copy of ``model`` (left as it is), its activation ranges observed on
    ``pages``: ``(1, 3, h, w)`` tensors as the classifier reads them
    (:func:`kzjobs.classify.predict.page_inputs`). CPU only."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    model = copy.deepcopy(model).cpu().eval()
    example = (torch.zeros(1, 3, 64, 64),)
    prepared = prepare_fx(_Trunk(model).eval(), get_default_qconfig_mapping("x86"), example)
    seen = 0
    with torch.inference_mode():
        for page in pages:
            prepared(page.contiguous())
            seen += 1
    if not seen:
        raise ValueError("no calibration pages: the int8 trunk needs pages to observe")
    return Int8Classifier(convert_fx(prepared), model.head, model.roi_size).eval()
