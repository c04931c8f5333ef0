"""The machine line of every recorded figure says what speeds torch up on that CPU."""

from __future__ import annotations

import torch

from bench.machine import machine_info
from bench.report import _machine
from kzjobs.core.device import cpu_has_bf16


def test_the_machine_record_names_the_cpus_vector_unit_and_bf16():
    info = machine_info()
    assert info["cpu_isa"] == torch.backends.cpu.get_cpu_capability()
    assert info["cpu_bf16"] is cpu_has_bf16()
    line = _machine(info)
    assert f"({info['cpu_isa']}" in line
    assert (", bf16)" in line) is info["cpu_bf16"]
    # Records written before these fields existed still read.
    old = {k: v for k, v in info.items() if k not in ("cpu_isa", "cpu_bf16")}
    assert _machine(old).startswith(f"{info['cpu']}, {info['cores']} cores")
