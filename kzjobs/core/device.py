"""Device choice and mixed precision. CPU is a first-class path, not a fallback."""

from __future__ import annotations

import contextlib
import functools
import itertools
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def select_device(name: str = "auto") -> torch.device:
    """``auto`` takes CUDA when present, else the CPU; ``cuda`` without a GPU is an error."""
    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but no CUDA device is available")
    device = torch.device(name)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return device


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware: Intel AMX tiles, or AVX512-BF16 (Intel
    Cooper Lake and later, AMD Zen 4 and later). Without either, oneDNN emulates bf16 and
    it runs slower than fp32."""
    import torch

    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")  # private: looked up
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


@contextlib.contextmanager
def autocast(device: torch.device, enabled: bool = True, *, cpu_bf16: bool = False
             ) -> Iterator[None]:
    """fp16 autocast on CUDA. On the CPU full precision, unless ``cpu_bf16`` and the CPU
    does bf16 in hardware (:func:`cpu_has_bf16`): faster, with nearly the same top classes
    (bench/RESULTS.md, 'Run of 2026-12-02 03:42 UTC' with AMX, 'Classifier experiments of
    2026-12-03 01:55-02:26 UTC' with AVX512-BF16). Callers whose outputs are coordinates
    (the detector's heads) leave it off: bf16 keeps 8 bits of mantissa, so a box edge near
    x=1000 would move by up to 4 px.
    """
    import torch

    if device.type == "cuda" and enabled:
        with torch.autocast("cuda", dtype=torch.float16):
            yield
    elif device.type == "cpu" and enabled and cpu_bf16 and cpu_has_bf16():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            yield
    else:
        yield


def for_inference(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``model`` on ``device`` in eval mode, its batch norms folded into its convolutions
    (:func:`fold_batch_norms`) and its 4-D weights in channels_last (NHWC): oneDNN on the
    CPU and tensor cores on CUDA run convolutions faster in that layout (the bench
    detector on an AMD EPYC: 1.44 -> 1.31 s a page, the same F1; ``bench.inference``).
    Inputs follow with ``.contiguous(memory_format=layout_of(model))``."""
    import torch

    return fold_batch_norms(model.eval()).to(device, memory_format=torch.channels_last)


def fold_batch_norms(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` (in eval mode) with each BatchNorm2d that directly follows a Conv2d folded
    into that convolution's weights and replaced by an identity: one pass over each
    feature map fewer, the same outputs up to float rounding. A pair is a Conv2d followed
    by a BatchNorm2d in an ``nn.Sequential`` (torchvision's Conv2dNormActivation, ResNet
    downsample), or torchvision ResNet's ``convN``/``bnN`` attributes, which its forward
    applies in that order. Training must not go on from such a model: it has no
    BatchNorm left to update, and its state_dict no longer fits a checkpoint's."""
    from torch import nn
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    if model.training:
        raise ValueError("batch norms fold only into a model in eval mode")
    for module in list(model.modules()):
        names = [name for name, _ in module.named_children()]
        if isinstance(module, nn.Sequential):
            pairs = list(itertools.pairwise(names))
        else:
            pairs = [(name, "bn" + name.removeprefix("conv")) for name in names
                     if name.startswith("conv")]
        for conv_name, norm_name in pairs:
            conv, norm = getattr(module, conv_name, None), getattr(module, norm_name, None)
            if isinstance(conv, nn.Conv2d) and type(norm) is nn.BatchNorm2d:
                setattr(module, conv_name, fuse_conv_bn_eval(conv, norm))
                setattr(module, norm_name, nn.Identity())
    return model


def layout_of(model: torch.nn.Module) -> torch.memory_format:
    """The memory format of the model's first 4-D weight (its inputs should match)."""
    import torch

    for weight in model.parameters():
        if weight.dim() == 4:
            if weight.is_contiguous(memory_format=torch.channels_last):
                return torch.channels_last
            break
    return torch.contiguous_format


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run with ``n`` torch CPU threads (0: leave as is), restored afterwards."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def grad_scaler(device: torch.device, enabled: bool = True) -> torch.amp.GradScaler:
    """A GradScaler that is active only with CUDA mixed precision."""
    import torch

    return torch.amp.GradScaler("cuda", enabled=enabled and device.type == "cuda")


def seed_everything(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
