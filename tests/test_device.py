"""Device choice and mixed precision on the machine the tests run on."""

import copy

import pytest
import torch

from kzjobs.core.device import (
    autocast,
    cpu_has_bf16,
    fold_batch_norms,
    for_inference,
    select_device,
)

CPU = torch.device("cpu")


def test_auto_takes_what_is_there_and_cuda_without_a_gpu_is_an_error():
    assert select_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA device"):
            select_device("cuda")


@pytest.mark.parametrize(("enabled", "cpu_bf16"), [(True, True), (True, False), (False, True)])
def test_cpu_bf16_only_where_asked_enabled_and_the_cpu_has_bf16(enabled, cpu_bf16):
    with autocast(CPU, enabled, cpu_bf16=cpu_bf16):
        on = torch.is_autocast_enabled("cpu")
        y = torch.ones(4, 4) @ torch.ones(4, 4)
    assert on == (enabled and cpu_bf16 and cpu_has_bf16())
    assert y.dtype == (torch.bfloat16 if on else torch.float32)
    assert not torch.is_autocast_enabled("cpu")  # restored on exit


def unsettle(model: torch.nn.Module) -> None:
    """Batch-norm statistics and affine weights far from their defaults, so that folding
    them changes the convolutions' weights."""
    for norm in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        norm.running_mean.uniform_(-1, 1)
        norm.running_var.uniform_(0.2, 3)
        norm.weight.data.uniform_(0.5, 1.5)
        norm.bias.data.uniform_(-0.5, 0.5)


def test_folded_batch_norms_leave_none_and_the_same_outputs():
    """A classifier as loaded for inference has its batch norms folded into its
    convolutions (stem, blocks and downsample paths); it scores boxes as the model it
    was built from does, up to float rounding, with statistics far from the defaults."""
    from kzjobs.classify.model import RoIClassifier

    torch.manual_seed(0)
    model = RoIClassifier("resnet18", 12, dropout=0.0, frozen=[]).eval()
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == 1 + 6 * 2 + 2  # stem, 2 in each block of layer1-3, 2 downsamples
    unsettle(model)
    page = torch.rand(1, 3, 96, 128)
    boxes = [torch.tensor([[10.0, 12, 40, 44], [60, 20, 100, 70]])]
    with torch.inference_mode():
        before = model(page, boxes)
        loaded = for_inference(copy.deepcopy(model), CPU)
        after = loaded(page.contiguous(memory_format=torch.channels_last), boxes)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in loaded.modules())
    assert before.abs().max() > 0.1
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="eval mode"):
        fold_batch_norms(RoIClassifier("resnet18", 12).train())


def test_batch_norms_fold_in_the_mobilenet_trunk_too():
    """The detector's other trunk keeps conv and norm side by side in Sequentials
    (Conv2dNormActivation): every one folds, and its features stay the same."""
    import torchvision

    torch.manual_seed(0)
    trunk = torchvision.models.mobilenet_v3_large(weights=None).features.eval()
    unsettle(trunk)
    page = torch.rand(1, 3, 160, 128)
    with torch.inference_mode():
        before = trunk(page)
        folded = fold_batch_norms(copy.deepcopy(trunk))
        after = folded(page)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)
