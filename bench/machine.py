"""What machine a figure was measured on, recorded beside every figure."""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import sys
import time
from typing import Any


def machine_info() -> dict:
    import torch

    from kzjobs.core.device import cpu_has_bf16

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    return {
        "cpu": cpu,
        # Two CPUs of one name can differ in what speeds torch up (AVX-512, bf16 in hardware).
        "cpu_isa": torch.backends.cpu.get_cpu_capability(),
        "cpu_bf16": cpu_has_bf16(),
        "cores": os.cpu_count(),
        "memory_gb": round(mem_gb, 1),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "commit": commit,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def wait_child(proc: Any, timeout: float | None = None) -> tuple[int, Any, int]:
    """Wait for a child; return its exit code, its ``rusage`` and its own peak RSS in KiB.

    The peak is the child's ``VmHWM``, read while it runs: ``wait4``'s ``ru_maxrss`` of a
    child forked from a big process (a benchmark holding models) reports the parent's
    size, because Linux carries the pre-exec high-water mark over. Past ``timeout``
    seconds the child is killed and ``TimeoutError`` raised.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    delay, peak_kb = 0.001, 0
    while True:
        peak_kb = max(peak_kb, vm_hwm_kb(proc.pid))
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)  # so Popen won't reap again
            return proc.returncode, usage, peak_kb
        if deadline is not None and time.monotonic() > deadline:
            proc.kill()
            _, status, _ = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            raise TimeoutError(f"pid {proc.pid} timed out after {timeout:.0f} s")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def vm_hwm_kb(pid: int) -> int:
    """A running process's own peak RSS in KiB (``VmHWM``; 0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0
