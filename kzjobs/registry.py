"""The MLflow registry of ``kz-recognizer``: one version is one whole blend (a bundle).

A version is a pyfunc written as "models from code" (:mod:`kzjobs.registry_model`,
executed by MLflow, never imported), with the bundle folder as its artifact: weight
files and a manifest, no pickles. Tags carry the dataset version, the profile, the git
commit and the per-book F1 on the held-out books. Promotion moves the ``champion``
alias (stages are not used); a fresh registration takes the ``candidate`` alias.

The embedded default is MLflow on SQLite under ``var/`` with artifacts on local disk;
production is a tracking server on PostgreSQL with S3 artifacts (``KZ_MLFLOW_URI``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kzjobs.bundle import copy_bundle, open_bundle
from kzjobs.data.dataset import Dataset
from kzjobs.job import Job
from kzjobs.settings import get_settings
from kzjobs.store import Store

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

CHAMPION = "champion"
CANDIDATE = "candidate"
EXPERIMENT = "kz-recognizer"
MODEL_CODE = Path(__file__).with_name("registry_model.py")
ARTIFACT = "bundle"  # the bundle folder's name among the model's artifacts


def model_name() -> str:
    return get_settings().registry_model


def tracking_uri() -> str:
    uri = get_settings().tracking_uri
    if uri.startswith("sqlite:///"):  # the embedded default: make its folder
        Path(uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    return uri


@contextlib.contextmanager
def _sqlite_lock(uri: str) -> Iterator[None]:
    """Hold an exclusive lock next to an SQLite database.

    MLflow creates and migrates an SQLite schema on first use; two jobs starting
    together on a fresh database (two folds side by side) would both try, and one fails.
    """
    import fcntl

    with open(f"{uri[len('sqlite:///'):]}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def client(uri: str | None = None) -> MlflowClient:
    """A client for the tracking server and registry at ``uri`` (default: the settings')."""
    import mlflow

    uri = uri or tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    if not uri.startswith("sqlite:///"):
        return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    with _sqlite_lock(uri):  # both stores create (or migrate) the schema here, one at a time
        found = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
        found.search_registered_models(max_results=1)
    return found


def experiment_id(mlflow_client: MlflowClient, name: str = EXPERIMENT) -> str:
    """The experiment's id, created with the configured artifact root when it is new."""
    found = mlflow_client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    settings = get_settings()
    root = settings.mlflow_artifacts
    if root is None and "://" in settings.tracking_uri and not settings.tracking_uri.startswith(
        ("http://", "https://", "databricks")
    ):
        # A database URI with no artifact root would write to ./mlruns wherever we run.
        root = (settings.home / "mlartifacts").resolve().as_uri()
    location = f"{root.rstrip('/')}/{name}" if root else None
    from mlflow.exceptions import MlflowException

    try:
        return mlflow_client.create_experiment(name, artifact_location=location)
    except MlflowException:  # another job created it meanwhile
        found = mlflow_client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def signature() -> Any:
    """Pages in (an id and a path or URI of the image), submission rows out; the param
    ``adapt`` as ``kzjobs recognize --adapt/--no-adapt`` (None: as the blend was trained)."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

    return ModelSignature(
        inputs=Schema([ColSpec("string", "image_id"), ColSpec("string", "image")]),
        outputs=Schema([ColSpec("string", "image_id"), ColSpec("string", "labels"),
                        ColSpec("string", "text")]),
        params=ParamSchema([ParamSpec("adapt", "boolean", None)]),
    )


def pip_requirements() -> list[str]:
    """The job image's requirements, from the package metadata (no inference run)."""
    from importlib.metadata import requires

    reqs = []
    for req in requires("kzjobs") or []:
        spec, _, marker = req.partition(";")
        if not marker.strip() or "extra == \"jobs\"" in marker:
            reqs.append(spec.strip())
    return reqs


def git_commit() -> str:
    """The code's commit: ``KZ_GIT_COMMIT`` (set in images), else ``git``, else ``unknown``."""
    if commit := os.environ.get("KZ_GIT_COMMIT"):
        return commit
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown"


def dataset_version(dataset: Dataset) -> str:
    """A short content digest of a dataset: its labels and its image list.

    Two evaluations are on "the same held-out books" exactly when their digests agree.
    """
    h = hashlib.sha256()
    if dataset.labelled:
        h.update(dataset.store.read_bytes("train.csv"))
    h.update("\n".join(sorted(dataset.image_keys.values())).encode())
    return h.hexdigest()[:16]


def eval_tag(heldout_version: str) -> str:
    """The version tag caching a version's F1 on one held-out set."""
    return f"eval.{heldout_version}.f1"


def version_ref(version: str | int, name: str | None = None) -> str:
    return f"models:/{name or model_name()}/{version}"


def get_version(ref: str | int, mlflow_client: MlflowClient | None = None) -> ModelVersion | None:
    """A version by number, alias (``champion``) or ``models:/`` URI; None when absent."""
    from mlflow.exceptions import MlflowException

    c = mlflow_client or client()
    name, key = model_name(), str(ref)
    if key.startswith("models:/"):
        name, _, key = key[len("models:/") :].partition("/")
        if "@" in name:
            name, _, key = name.partition("@")
            key = key or "champion"
        elif not key:
            raise ValueError(f"no version or alias in {ref!r}")
    try:
        if key.isdigit():
            return c.get_model_version(name, key)
        return c.get_model_version_by_alias(name, key)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def download_bundle(ref: str) -> Path:
    """The local bundle folder of a registered version, downloaded once per version."""
    import mlflow

    version = get_version(ref)
    if version is None:
        raise LookupError(f"no registered version for {ref!r}")
    dest = (get_settings().home / "models" / version.name / str(version.version)).resolve()
    bundle = dest / "artifacts" / ARTIFACT
    if not (bundle / "bundle.json").is_file():
        client()  # sets the tracking and registry URIs
        dest.parent.mkdir(parents=True, exist_ok=True)
        # Download beside, then rename: concurrent jobs never see half a model.
        tmp = Path(tempfile.mkdtemp(prefix=f".{version.version}-", dir=dest.parent))
        try:
            mlflow.artifacts.download_artifacts(
                artifact_uri=version_ref(version.version, version.name), dst_path=str(tmp)
            )
            if dest.exists() and not (bundle / "bundle.json").is_file():
                shutil.rmtree(dest)  # a download cut short by a crash
            try:
                tmp.rename(dest)
            except OSError:  # another job finished first: use its copy
                if not (bundle / "bundle.json").is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return bundle


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

    ``evaluation`` is an :class:`~kzjobs.evaluate.EvaluateJob` summary on the held-out books.
    """
    import mlflow

    bundle, root = open_bundle(bundle_ref, store)
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
                python_model=str(MODEL_CODE),
                artifacts={ARTIFACT: str(local)},
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

    bundle: str  # store key of the bundle root (holds bundle.json)
    evaluation: str  # store key of the evaluation JSON on the held-out books
    dataset: str  # the training dataset (its version goes in the tags)
    alias: str | None = CANDIDATE

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
