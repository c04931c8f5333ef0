"""Starting weights: where they are, whether they are the ones written, what made them.

A reference is one of
- ``kzjobs:<name>``: a file shipped in this package (``kzjobs/pretrain/shipped/``);
- ``models:/<name>/<version or @alias>``: a registered version of ``kz-pretrained``;
- a local file path (e.g. the user's own ImageNet weights);
- else a key in the store (where ``kz_retrain``'s pretrain task writes).

Files are read with ``torch.load(weights_only=True)``: tensors and plain data, no code.
A ``<file>.sha256`` beside a file is checked before it is read; the pretrain job always
writes one, and shipped, store and registry weights without one are refused.
"""

from __future__ import annotations

import hashlib
import logging
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kzjobs.core.store import Store

log = logging.getLogger(__name__)

SHIPPED_PREFIX = "kzjobs:"
REGISTERED_MODEL = "kz-pretrained"
SUFFIX = ".sha256"


class WeightsIntegrityError(ValueError):
    """A weights file whose sha256 is not the one written beside it."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def checked(data: bytes, expected: str | None, where: str, *, required: bool) -> bytes:
    """``data`` if its sha256 is ``expected`` (the first word of a sha256sum line)."""
    if expected is None:
        if required:
            raise WeightsIntegrityError(f"{where}: no {SUFFIX} file beside it: refusing to load")
        log.warning("%s has no %s beside it: loaded unchecked", where, SUFFIX)
        return data
    want = expected.split()[0].strip().lower() if expected.strip() else ""
    got = sha256(data)
    if got != want:
        raise WeightsIntegrityError(
            f"{where}: sha256 {got} is not the {want or '(empty)'} written beside it "
            "(a changed or truncated file; rebuild it or fetch it again)")
    return data


def _read_pair(ref: str, store: Store | None) -> tuple[bytes, str | None, bool]:
    """The file's bytes, its written sha256 (None when absent) and whether one is required."""
    if ref.startswith(SHIPPED_PREFIX):
        path = Path(str(resources.files("kzjobs.pretrain").joinpath(
            "shipped", ref.removeprefix(SHIPPED_PREFIX))))
        return _local_pair(path, required=True)
    if ref.startswith("models:/"):
        import mlflow

        from kzjobs.release import registry

        registry.client()  # sets the tracking and registry URIs
        folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=ref))
        files = sorted(p for p in folder.rglob("*.pt"))
        if len(files) != 1:
            raise ValueError(f"{ref}: expected one .pt file in the version, found {files}")
        return _local_pair(files[0], required=True)
    path = Path(ref).expanduser()
    if path.is_file():
        return _local_pair(path, required=False)
    if store is None:
        from kzjobs.core.settings import get_settings
        from kzjobs.core.store import open_store

        store = open_store(get_settings().store_uri)
    if not store.exists(ref):
        raise FileNotFoundError(f"weights {ref!r}: no such file, shipped name, model or store key")
    side = ref + SUFFIX
    expected = store.read_bytes(side).decode() if store.exists(side) else None
    return store.read_bytes(ref), expected, True


def _local_pair(path: Path, *, required: bool) -> tuple[bytes, str | None, bool]:
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    side = path.with_name(path.name + SUFFIX)
    return path.read_bytes(), side.read_text() if side.is_file() else None, required


def read_weights(ref: str | Path, store: Store | None = None) -> Any:
    """The object saved at ``ref`` (a state_dict, or a dict holding one), its sha256
    checked, floats upcast to fp32, loaded with ``weights_only=True``."""
    from kzjobs.core.checkpoint import load_checkpoint

    data, expected, required = _read_pair(str(ref), store)
    return _upcast(load_checkpoint(checked(data, expected, str(ref), required=required)))


def _upcast(obj: Any) -> Any:
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.float() if obj.is_floating_point() else obj
    if isinstance(obj, dict):
        return {k: _upcast(v) for k, v in obj.items()}
    return obj


def state_dict_of(obj: Any) -> dict[str, Any]:
    """A bare state_dict, or the one a checkpoint holds under ``state_dict`` or ``model``."""
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
        return {k.removeprefix("module."): v for k, v in obj.items()}
    raise ValueError(f"expected a state_dict, got {type(obj).__name__}")


def save_weights(obj: dict[str, Any]) -> tuple[bytes, str]:
    """The bytes of ``obj`` as ``torch.save`` writes them, and their sha256sum line."""
    from kzjobs.core.checkpoint import checkpoint_bytes

    data = checkpoint_bytes(obj)
    return data, f"{sha256(data)}\n"


def fingerprint(config: Any, kind: str, head: dict[str, Any]) -> str:
    """What a pretrained file depends on: the vocabulary, the fonts' files, the settings
    and this code. A different fingerprint means the weights are stale."""
    import json

    from kzjobs.pretrain.glyphs import font_ids, vocabulary_chars
    from kzjobs.synth.fonts import font_path

    chars = vocabulary_chars(config)
    fonts = {f: font_path(f).stat().st_size for f in font_ids(config)}
    code = [resources.files("kzjobs.pretrain").joinpath(name).read_bytes()
            for name in ("glyphs.py", "job.py", "config.py")]
    code.append(resources.files("kzjobs.classify").joinpath("model.py").read_bytes())
    settings = config.model_dump(mode="json", exclude={"threads", "workers", "kinds"})
    text = json.dumps({"kind": kind, "head": head, "chars": "".join(chars), "fonts": fonts,
                       "config": settings}, sort_keys=True)
    return sha256(text.encode() + b"".join(sha256(c).encode() for c in code))
