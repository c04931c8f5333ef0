"""Checkpoint dicts as bytes: state_dicts and plain data, never pickled objects.

Every weight file the project writes goes through here, and every one is read back
with ``torch.load(weights_only=True)``, so a file from the store cannot run code.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from kzjobs.core.store import Store


def checkpoint_bytes(checkpoint: dict[str, Any]) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(checkpoint, buf)
    return buf.getvalue()


def load_checkpoint(data: bytes | str | Path) -> dict[str, Any]:
    """A checkpoint from bytes or a local file, on the CPU, with ``weights_only=True``."""
    import torch

    source = io.BytesIO(data) if isinstance(data, bytes) else Path(data).expanduser()
    return torch.load(source, map_location="cpu", weights_only=True)


def save_to_store(store: Store, key: str, checkpoint: dict[str, Any]) -> None:
    store.write_bytes(key, checkpoint_bytes(checkpoint))


def load_from_store(store: Store, key: str) -> dict[str, Any]:
    return load_checkpoint(store.read_bytes(key))


def changed_settings(saved: dict[str, Any], now: dict[str, Any], free: set[str]) -> list[str]:
    """The settings of ``now`` a checkpoint made with ``saved`` cannot resume under:
    every one that differs, but those in ``free`` (threads, checkpoint intervals)."""
    return sorted(k for k in now if k not in free and saved.get(k) != now[k])


def rng_state() -> dict[str, Any]:
    """The global random generators' states (torch, CUDA, NumPy, Python) as plain data,
    for a checkpoint that resumes a run where it stood."""
    import random

    import numpy as np
    import torch

    np_state = np.random.get_state(legacy=False)
    np_state["state"]["key"] = np_state["state"]["key"].tolist()  # plain data for weights_only
    state = {"torch": torch.get_rng_state(), "numpy": np_state, "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    import random

    import numpy as np
    import torch

    torch.set_rng_state(state["torch"])
    np_state = dict(state["numpy"])
    np_state["state"] = dict(np_state["state"], key=np.array(np_state["state"]["key"], np.uint32))
    np.random.set_state(np_state)
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
