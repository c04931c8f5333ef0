"""A model reference (``--model`` of the jobs), resolved to an opened bundle.

A reference is one of:

- ``models:/kz-recognizer@champion`` or ``models:/kz-recognizer/3``: a registered version;
- a store key or a folder path / ``s3://`` URI: a bundle root holding ``bundle.json``. A
  relative path is a store key first, and a local folder when the store has no bundle
  there (``--model var/bench/model``).

Above both the manifest (:mod:`kzjobs.release.bundle`) and the registry
(:mod:`kzjobs.release.registry`), which downloads a registered version: neither imports this module.
"""

from __future__ import annotations

from pathlib import Path

from kzjobs.core.store import Store, join, open_store
from kzjobs.release.bundle import BUNDLE_FILE, Bundle


def is_registry_ref(ref: str) -> bool:
    return ref.startswith("models:/")


def bundle_root(ref: str, store: Store | None = None) -> Store:
    """The store holding the bundle named by ``ref`` (see the module doc).

    A registered version is downloaded from MLflow into a local folder first.
    """
    if is_registry_ref(ref):
        from kzjobs.release.registry import download_bundle  # mlflow: imported only when needed

        return open_store(download_bundle(ref))
    if "://" in ref or ref.startswith(("/", ".", "~")) or store is None:
        return open_store(ref)
    keyed = store.child(join(ref))
    # A relative folder path (``var/bench/model``) when the store has no bundle there.
    if not keyed.exists(BUNDLE_FILE) and (Path(ref) / BUNDLE_FILE).is_file():
        return open_store(ref)
    return keyed


def open_bundle(ref: str, store: Store | None = None) -> tuple[Bundle, Store]:
    """The manifest and the root of the bundle named by ``ref``."""
    root = bundle_root(ref, store)
    return Bundle.load(root), root
