"""A bundle: one whole blend (detector, classifiers, level 2, vocabulary) as weight files.

A bundle lives under a root (a training run's prefix in the store, or the folder
MLflow downloads for a registered version). ``bundle.json`` at the root is the
manifest; every path in it is relative to the root. Weights are state_dict
checkpoints and LightGBM/XGBoost native model files, never pickles. The manifest
records the sha256 of every file, and loading a bundle checks each one: a file changed,
added or swapped after the bundle was written is refused (:class:`BundleIntegrityError`).

A model reference (a registered version or a bundle root) is opened by
:func:`kzjobs.release.model_ref.open_bundle`; the job that writes a run's manifest is
:class:`kzjobs.release.jobs.BundleJob`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from kzjobs.core.keys import LEVEL2
from kzjobs.core.store import Store, open_store

BUNDLE_FILE = "bundle.json"
FORMAT_VERSION = 2  # 2: ``sha256`` of every file


class BundleIntegrityError(ValueError):
    """A bundle's files are not the ones its manifest recorded: never load it."""


def file_sha256(root: Store, rel: str) -> str:
    """The hex sha256 of one file of a store (streamed from disk when it is local)."""
    h = hashlib.sha256()
    if (local := root.local_path(rel)) is not None:
        with open(local, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    else:
        h.update(root.read_bytes(rel))
    return h.hexdigest()


class Level2Files(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prefix: str = LEVEL2  # what ``Level2Model.load(root, prefix)`` reads
    meta: str = "level2/meta.json"
    vocabulary: str = "level2/vocab.json"
    lightgbm: list[str] = Field(default_factory=list)  # native text models, one per fold
    xgboost: list[str] = Field(default_factory=list)  # native UBJSON models, one per fold


class Bundle(BaseModel):
    """The manifest of a blend. Paths are relative to the bundle's root."""

    model_config = ConfigDict(extra="forbid")

    format: int = FORMAT_VERSION
    profile: str  # the name of the profile the blend was trained with
    profile_data: dict[str, Any] = Field(default_factory=dict)  # that profile, in full
    detector: list[str]  # detector checkpoints, one per fold
    classifiers: dict[str, list[str]]  # kind -> classifier checkpoints, one per fold
    level2: Level2Files = Field(default_factory=Level2Files)
    vocabulary: str  # JSON {code: char} of every class the blend can output
    # Lowered seg_fp logit of every classifier on the pages it reads (kzjobs.method.blend.
    # shift_seg_fp): the adaptation's, fitted on the incoming collections (pseudo.seg_fp_shift).
    seg_fp_shift: float = Field(0.0, ge=0.0)
    # {book: {code: shift}} added to every classifier's logits on that book's pages
    # (kzjobs.method.shifts.fit_class_shift): the adaptation's, per book of the incoming
    # collections (pseudo.class_shift). Other books' pages are read as they are.
    class_shifts: dict[str, dict[str, float]] = Field(default_factory=dict)
    # {code: share}: how often the blend calls each class on its OOF pages, within its
    # script (kzjobs.method.shifts.class_shares): what recognition fits a new book's shifts to.
    class_shares: dict[str, float] = Field(default_factory=dict)
    # Classifier checkpoint -> the state of its int8 trunk (kzjobs.classify.quantize),
    # made when the profile reads with ``classify.int8_trunk``.
    int8_trunks: dict[str, str] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    # file -> its hex sha256, for every file in ``files()``: written by ``save``, checked
    # by ``load``.
    sha256: dict[str, str] = Field(default_factory=dict)

    def files(self) -> list[str]:
        """Every file the blend needs, manifest excluded, in a stable order."""
        paths = [*self.detector]
        for kind in sorted(self.classifiers):
            paths += self.classifiers[kind]
            paths += [self.int8_trunks[p] for p in self.classifiers[kind] if p in self.int8_trunks]
        l2 = self.level2
        if l2.lightgbm or l2.xgboost:  # a blend without level 2 takes the blend's top class
            paths += [l2.meta, l2.vocabulary, *l2.lightgbm, *l2.xgboost]
        paths.append(self.vocabulary)
        return list(dict.fromkeys(paths))

    def missing(self, root: Store) -> list[str]:
        return [p for p in self.files() if not root.exists(p)]

    def save(self, root: Store) -> None:
        """Write the manifest last, after checking every file it names is there, with the
        sha256 of each file as it is now (the hashes of a copied bundle are recomputed)."""
        if missing := self.missing(root):
            raise FileNotFoundError(f"bundle at {root.uri} lacks {missing}")
        self.sha256 = {rel: file_sha256(root, rel) for rel in self.files()}
        root.write_json(BUNDLE_FILE, self.model_dump(mode="json"))

    def verify(self, root: Store) -> None:
        """Check every file against its recorded sha256; raise on any difference.

        Every file is read once here (from S3: downloaded), before any of them is loaded:
        a bundle is trusted whole or not at all.
        """
        where = f"bundle at {root.uri}"
        files = self.files()
        if unhashed := [p for p in files if p not in self.sha256]:
            raise BundleIntegrityError(f"{where}: {BUNDLE_FILE} names files without a "
                                       f"recorded sha256: {unhashed}")
        if extra := sorted(set(self.sha256) - set(files)):
            raise BundleIntegrityError(f"{where}: {BUNDLE_FILE} records hashes of files the "
                                       f"blend does not use: {extra}")
        if missing := self.missing(root):
            raise FileNotFoundError(f"{where} lacks {missing}")
        for rel in files:
            if (found := file_sha256(root, rel)) != self.sha256[rel]:
                raise BundleIntegrityError(
                    f"{where}: {rel} has sha256 {found}, but {BUNDLE_FILE} records "
                    f"{self.sha256[rel]}: the file was changed after the bundle was written"
                )

    @classmethod
    def load(cls, root: Store, *, verify: bool = True) -> Bundle:
        """The manifest at ``root``, its files checked against their hashes.

        ``verify=False`` reads the manifest alone, for code that only reads its fields
        (never for code that loads a weight).
        """
        try:
            data = root.read_json(BUNDLE_FILE)
        except KeyError:
            raise FileNotFoundError(f"no {BUNDLE_FILE} at {root.uri}") from None
        if isinstance(data, dict) and data.get("format") != FORMAT_VERSION:
            old = " (written before bundles recorded file hashes: delete it and run " \
                  "`kzjobs bundle` again)" if data.get("format") == 1 else ""
            raise BundleIntegrityError(f"bundle format {data.get('format')} at {root.uri}; "
                                       f"expected {FORMAT_VERSION}{old}")
        try:
            bundle = cls.model_validate(data)
        except ValueError as exc:
            raise BundleIntegrityError(f"{BUNDLE_FILE} at {root.uri} is not a valid "
                                       f"manifest: {exc}") from exc
        if verify:
            bundle.verify(root)
        return bundle


def copy_bundle(bundle: Bundle, src: Store, dest: Path) -> Path:
    """Copy a bundle's manifest and files into a local folder (for logging to MLflow).

    The copy keeps the recorded hash of each file it takes (never a hash of what it
    read: a changed file stays refused), and is checked before it is used.
    """
    out = open_store(dest)
    files = bundle.files()
    for rel in files:
        local = src.local_path(rel)
        out.write_bytes(rel, local.read_bytes() if local else src.read_bytes(rel))
    # A copy with fewer files (``model_copy(update=...)``) drops their hashes.
    kept = {rel: h for rel, h in bundle.sha256.items() if rel in files}
    out.write_json(BUNDLE_FILE, bundle.model_copy(update={"sha256": kept}).model_dump(mode="json"))
    Bundle.load(out)
    return Path(out.uri)
