"""The release jobs: write a training run's bundle manifest (``bundle``), and log a bundle
as a new ``kz-recognizer`` version of the MLflow registry (``register``).

Jobs over the manifest (:mod:`kzjobs.release.bundle`), the model references
(:mod:`kzjobs.release.model_ref`) and the registry's pieces
(:mod:`kzjobs.release.registry`); none of those imports this module.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field

from kzjobs.core.job import Cli, Job
from kzjobs.core.settings import get_settings
from kzjobs.core.store import Store
from kzjobs.data.dataset import Dataset
from kzjobs.release.bundle import BUNDLE_FILE, Bundle, Level2Files, copy_bundle
from kzjobs.release.model_ref import open_bundle
from kzjobs.release.registry import (
    ARTIFACT,
    BUNDLE_TAG,
    CANDIDATE,
    LOADER_MODULE,
    client,
    dataset_version,
    eval_tag,
    experiment_id,
    git_commit,
    model_name,
    pip_requirements,
    signature,
)


class BundleJob(Job):
    """Write ``bundle.json`` at a training run's prefix, naming the files of its blend.

    The classifier kinds and folds are level 2's (``level2/meta.json``); the detector
    has one checkpoint per fold of the run. The vocabulary is written next to them.
    Level 2 joins the blend only when it beat the plain blend on the OOF pages
    (``level2/report.json``); otherwise the blend's top class decides.
    """

    run_prefix: Annotated[str, Cli(("--run",))] = Field(
        description="Training run prefix: becomes the bundle's root.")
    dataset: str = Field(description="The run's training dataset (its vocabulary).")

    def run(self) -> dict[str, Any]:
        from kzjobs.core.keys import RunKeys
        from kzjobs.data.dataset import Dataset
        from kzjobs.data.format import code_to_char
        from kzjobs.method.blend import blend
        from kzjobs.method.folds import load_folds
        from kzjobs.method.predictions import load_predictions, oof_keys
        from kzjobs.method.shifts import class_shares

        root, files = self.store.child(self.run_prefix), RunKeys("")  # keys in the bundle
        if root.exists(BUNDLE_FILE):
            return {"bundle": self.run_prefix, "skipped": True,
                    "files": Bundle.load(root).files()}
        meta = root.read_json(files.level2.meta)
        folds = sorted(set(load_folds(root, files.folds).values()))
        level2_folds = [int(k) for k in meta["folds"]]
        ds = Dataset.open(self.dataset, self.store)
        names = ds.vocabulary if ds.store.exists("unicode_translation.csv") else {}
        codes = [c for c in root.read_json(files.level2.vocab) if c.startswith("U+")]
        root.write_json(files.vocabulary, {c: names.get(c) or code_to_char(c) for c in codes})
        report = root.read_json(files.level2.report) if root.exists(files.level2.report) else {}
        use_level2 = level2_helps(report)
        # An adapted run's shift is the one its pseudolabel job set; else the profile's.
        shift, class_shifts = self.profile.pseudo.seg_fp_shift, {}
        if root.exists(files.pseudo_report):
            adapted = root.read_json(files.pseudo_report)
            shift = adapted.get("seg_fp_shift", {}).get("shift", 0.0)
            class_shifts = adapted.get("class_shift", {}).get("books", {})
        shift = 0.0 if shift == "fit" else float(shift)
        oof = load_predictions(self.store, oof_keys(self.store, self.run_prefix, meta["kinds"]))
        shares = class_shares(blend(oof))
        bundle = Bundle(
            profile=self.profile.name,
            profile_data=self.profile.model_dump(mode="json", by_alias=True),
            detector=[files.detector(k) for k in folds],
            classifiers={
                kind: [files.classifier(kind, k) for k in level2_folds]
                for kind in meta["kinds"]
            },
            level2=Level2Files(
                lightgbm=[files.level2.lightgbm(k) for k in level2_folds] if use_level2 else [],
                xgboost=[files.level2.xgboost(k) for k in level2_folds] if use_level2 else [],
            ),
            vocabulary=files.vocabulary,
            seg_fp_shift=shift,
            class_shifts=class_shifts,
            class_shares={str(c): round(float(v), 6) for c, v in shares.items()},
            metrics={k: v for k, v in report.items() if isinstance(v, int | float)}
            | {"level2_used": float(use_level2), "seg_fp_shift": shift,
               "class_shift_books": float(len(class_shifts))},
        )
        if self.profile.classify.int8_trunk:
            from kzjobs.classify.quantize import quantize_bundle

            bundle = quantize_bundle(bundle, root, ds, self.profile.classify)
        bundle.save(root)  # refuses a bundle with a missing file
        return {"bundle": self.run_prefix, "files": bundle.files(), "metrics": bundle.metrics,
                "level2": use_level2}


def level2_helps(report: dict[str, Any]) -> bool:
    """Whether level 2's OOF F1 is at least the plain blend's (True when not measured)."""
    level2, blend = report.get("level2_oof_f1"), report.get("blend_oof_f1")
    return level2 is None or blend is None or level2 >= blend


def register_bundle(
    bundle_ref: str,
    store: Store,
    *,
    evaluation: dict[str, Any],
    dataset: str,
    dataset_version: str,
    alias: str | None = CANDIDATE,
) -> dict[str, Any]:
    """Log a bundle as a new ``kz-recognizer`` version with its tags; idempotent per bundle.

    ``evaluation`` is an :class:`~kzjobs.release.evaluate.EvaluateJob` summary on the
    held-out books.
    """
    import mlflow

    bundle, root = open_bundle(bundle_ref, store)  # its files checked against their hashes
    source = root.uri
    c = client()
    name = model_name()
    for existing in c.search_model_versions(f"name='{name}'"):
        if existing.tags.get("bundle_source") == source:  # a re-run after a crash
            if alias:
                c.set_registered_model_alias(name, alias, existing.version)
            return {"name": name, "version": int(existing.version), "reused": True}

    f1 = float(evaluation["f1"])
    by_book = {b: float(v["f1"]) for b, v in evaluation.get("by_book", {}).items()}
    tags = {
        "bundle_source": source,
        "profile": bundle.profile,
        "dataset": dataset,
        "dataset_version": dataset_version,
        "heldout": evaluation["dataset"],
        "heldout_version": evaluation["dataset_version"],
        "git_commit": git_commit(),
        "f1": repr(f1),
        eval_tag(evaluation["dataset_version"]): repr(f1),  # promotion compares these exactly
        **{f"f1.book.{b}": repr(v) for b, v in sorted(by_book.items())},
    }
    with tempfile.TemporaryDirectory(prefix="kz-bundle-") as tmp:
        local = copy_bundle(bundle, root, Path(tmp) / ARTIFACT)
        # The manifest's hash, kept in the registry's database: a version whose artifact
        # is rewritten (manifest and weights together) no longer matches it.
        tags[BUNDLE_TAG] = hashlib.sha256((local / BUNDLE_FILE).read_bytes()).hexdigest()
        with mlflow.start_run(experiment_id=experiment_id(c), run_name=f"register {source}") as run:
            mlflow.log_params(
                {"profile": bundle.profile, "dataset": dataset, "heldout": evaluation["dataset"]}
            )
            detection = ({"heldout_detection_f1": float(evaluation["detection_f1"])}
                         if "detection_f1" in evaluation else {})
            mlflow.log_metrics(
                {"heldout_f1": f1, **{f"heldout_f1.{b}": v for b, v in by_book.items()},
                 **detection}
            )
            mlflow.set_tags({k: v for k, v in tags.items() if not k.startswith("eval.")})
            info = mlflow.pyfunc.log_model(
                name="recognizer",
                loader_module=LOADER_MODULE,  # no code in the artifact (module doc)
                data_path=str(local),
                signature=signature(),
                pip_requirements=pip_requirements(),
                registered_model_name=name,
                metadata={"job_image": get_settings().job_image},
            )
    version = str(info.registered_model_version)
    for key, value in tags.items():
        c.set_model_version_tag(name, version, key, value)
    if alias:
        c.set_registered_model_alias(name, alias, version)
    return {"name": name, "version": int(version), "run_id": run.info.run_id, "f1": f1,
            "alias": alias, "reused": False}


class RegisterJob(Job):
    """Register a training run's bundle as a candidate, with its held-out evaluation."""

    bundle: str = Field(description="Store key of the bundle root (bundle.json).")
    evaluation: str = Field(description="Store key of the held-out evaluation JSON.")
    dataset: str = Field(description="The training dataset (its version is a tag).")
    alias: str | None = Field(CANDIDATE, description="Alias for the new version.")

    def run(self) -> dict[str, Any]:
        evaluation = self.store.read_json(self.evaluation)
        ds = Dataset.open(self.dataset, self.store)
        return register_bundle(
            self.bundle,
            self.store,
            evaluation=evaluation,
            dataset=self.dataset,
            dataset_version=dataset_version(ds),
            alias=self.alias,
        )
