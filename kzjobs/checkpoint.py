"""Checkpoint dicts as bytes: state_dicts and plain data, never pickled objects.

Every weight file the project writes goes through here, and every one is read back
with ``torch.load(weights_only=True)``, so a file from the store cannot run code.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from kzjobs.store import Store


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
