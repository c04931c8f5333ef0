"""Device choice and mixed precision on the machine the tests run on."""

import pytest
import torch

from kzjobs.device import autocast, cpu_has_bf16, select_device

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
