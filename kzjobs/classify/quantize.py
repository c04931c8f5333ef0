"""An int8 trunk for the ROI classifier, for reading pages on x86 CPUs.

The trunk (conv1 to layer3, where nearly all of a page's classifier time goes) is
quantized after training with PyTorch's FX static quantization on its x86 backend:
int8 weights per output channel, activation ranges observed on calibration pages, batch
norms fused into the convolutions. ``roi_align`` and the head stay in fp32. On one
thread a bench page's classifier time is about 0.6 of fp32's on an AVX2 core, at the same
F1 (``python -m bench.int8``; bench/RESULTS.md, 'Run of 2026-12-06 14:02 UTC'); on an
AVX512-BF16 core the trunk runs in about half the time of bf16 (bench/RESULTS.md, 'Run of
2026-12-06 16:00 UTC').

With ``classify.int8_trunk`` the bundle job calibrates each of its classifiers on training
pages and stores the quantized trunk's state next to the checkpoint
(:func:`quantize_bundle`); recognition rebuilds it from there (:func:`load_int8_model`),
so every shard and every re-run reads with the same int8 weights and ranges.

Why FX and not torchao's pt2e: pt2e's x86 int8 kernels come from inductor (``torch.
compile``, a C++ toolchain at load time), while FX's converted modules run fbgemm/oneDNN
int8 kernels in eager mode. PyTorch warns that FX quantization is deprecated; the
warning is silenced here, where it is known.
"""

from __future__ import annotations

import copy
import io
import logging
import warnings
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from kzjobs.classify.model import RoIClassifier, pool_boxes, trained_model

if TYPE_CHECKING:
    from kzjobs.classify.config import ClassifyConfig
    from kzjobs.core.store import Store
    from kzjobs.data.dataset import Dataset
    from kzjobs.release.bundle import Bundle

log = logging.getLogger(__name__)

BACKEND = "x86"


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
        # The head in fp32 even under bf16 autocast: it is a small share of the time, and
        # int8 rounding plus bf16's would add up.
        with torch.autocast("cpu", enabled=False):
            maps = self.quantized_trunk(images.float().contiguous())
            return self.head(pool_boxes(maps, boxes, self.roi_size, images.shape[-1]))


def int8_supported() -> bool:
    """Whether this build of torch has the x86 int8 kernels the trunk runs on."""
    return BACKEND in torch.backends.quantized.supported_engines


def _quantizable(model: RoIClassifier, pages: Iterable[torch.Tensor]) -> tuple[nn.Module, int]:
    """The trunk of ``model`` (a CPU copy in eval mode) prepared for quantization, with
    the number of ``pages`` it observed."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_fx

    trunk = _Trunk(copy.deepcopy(model).cpu().eval()).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # FX quantization's deprecation notice
        prepared = prepare_fx(trunk, get_default_qconfig_mapping(BACKEND),
                              (torch.zeros(1, 3, 64, 64),))
    seen = 0
    with torch.inference_mode():
        for page in pages:
            prepared(page.contiguous())
            seen += 1
    return prepared, seen


def _convert(prepared: nn.Module) -> nn.Module:
    from torch.ao.quantization.quantize_fx import convert_fx

    with warnings.catch_warnings():
        # Deprecation, and observers that saw nothing when the state is loaded after.
        warnings.simplefilter("ignore")
        return convert_fx(prepared)


def quantize_classifier(model: RoIClassifier, pages: Iterable[torch.Tensor]) -> Int8Classifier:
    """An int8-trunk copy of ``model`` (left as it is), its activation ranges observed on
    ``pages``: ``(1, 3, h, w)`` tensors as the classifier reads them
    (:func:`calibration_pages`). CPU only."""
    prepared, seen = _quantizable(model, pages)
    if not seen:
        raise ValueError("no calibration pages: the int8 trunk needs pages to observe")
    return Int8Classifier(_convert(prepared), copy.deepcopy(model.head).cpu().eval(),
                          model.roi_size).eval()


def trunk_state(model: Int8Classifier) -> bytes:
    """The quantized trunk's state (int8 weights, scales, zero points) as bytes."""
    buffer = io.BytesIO()
    torch.save(model.quantized_trunk.state_dict(), buffer)
    return buffer.getvalue()


def load_int8_model(checkpoint: dict[str, Any], trunk: bytes) -> Int8Classifier:
    """The classifier of ``checkpoint`` with the int8 trunk :func:`trunk_state` saved: the
    same outputs as the model that was calibrated, on any x86 CPU."""
    model = trained_model(checkpoint)
    prepared, _ = _quantizable(model, [])
    quantized = _convert(prepared)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's own TypedStorage notice for quantized tensors
        quantized.load_state_dict(torch.load(io.BytesIO(trunk), weights_only=True))
    return Int8Classifier(quantized, model.head, model.roi_size).eval()


def calibration_pages(dataset: Dataset, cfg: ClassifyConfig, n: int, *,
                      page_size: int | None = None,
                      boxes: dict[str, Any] | None = None) -> Iterator[torch.Tensor]:
    """What the classifier reads (:func:`~kzjobs.classify.predict.page_inputs`) of ``n``
    pages spread evenly over ``dataset``, with their boxes (default: the annotations)."""
    import numpy as np

    from kzjobs.classify.predict import page_inputs

    boxes = dataset.annotations if boxes is None else boxes
    ids = [i for i in dataset.image_ids() if boxes.get(i)]
    for image_id in ids[:: max(1, len(ids) // max(n, 1))][:n]:
        image = np.asarray(dataset.read_image(image_id))
        for tensor, _ in page_inputs(image, boxes[image_id], cfg, page_size=page_size):
            yield tensor[None]


def int8_trunk_path(checkpoint_path: str) -> str:
    """Where a bundle keeps the int8 trunk of the classifier at ``checkpoint_path``."""
    return checkpoint_path.removesuffix(".pt") + ".int8.pt"


def quantize_bundle(bundle: Bundle, root: Store, dataset: Dataset, cfg: ClassifyConfig
                    ) -> Bundle:
    """``bundle`` with an int8 trunk for each of its classifiers, calibrated on
    ``cfg.int8_calibration_pages`` pages of ``dataset`` (the training books) and written
    next to its checkpoint under ``root``; trunks it already has are kept. The manifest
    is not saved here."""
    from kzjobs.core.checkpoint import load_checkpoint

    if not int8_supported():
        raise RuntimeError("int8 trunks are made with torch's x86 int8 kernels, which this "
                           f"build lacks (it has {torch.backends.quantized.supported_engines})")
    trunks = dict(bundle.int8_trunks)
    for kind in sorted(bundle.classifiers):
        for path in bundle.classifiers[kind]:
            if path in trunks and root.exists(trunks[path]):
                continue
            checkpoint = load_checkpoint(root.read_bytes(path))
            model = trained_model(checkpoint)
            page_size = int(checkpoint.get("config", {}).get("page_size", cfg.page_size))
            pages = calibration_pages(dataset, cfg, cfg.int8_calibration_pages,
                                      page_size=page_size)
            int8 = quantize_classifier(model, pages)
            trunks[path] = int8_trunk_path(path)
            root.write_bytes(trunks[path], trunk_state(int8))
            log.info("int8 trunk of %s: %s", path, trunks[path])
    return bundle.model_copy(update={"int8_trunks": trunks})
