"""The MLflow registry of ``kz-recognizer``: one version is one whole blend (a bundle).

A version is a pyfunc whose ``loader_module`` is :mod:`kzjobs.release.registry_model`, imported
from the installed package, with the bundle folder as its data: weight files and a
manifest with their sha256, no pickles and no code. :func:`load_model` and
:func:`download_bundle` refuse a version whose ``MLmodel`` names anything else (code in
the artifact, another loader) or whose manifest is not the one registered (its sha256 is
the version tag ``bundle_sha256``), and the bundle's files are checked against the
manifest when it is opened. Load versions through them, not ``mlflow.pyfunc.load_model``,
which would run whatever a tampered ``MLmodel`` names.

Tags carry the dataset version, the profile, the git commit and the per-book F1 on the
held-out books. Promotion moves the ``champion`` alias (stages are not used); a fresh
registration takes the ``candidate`` alias.

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

from kzjobs.core.settings import get_settings
from kzjobs.data.dataset import Dataset
from kzjobs.release.bundle import BUNDLE_FILE, BundleIntegrityError

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

CHAMPION = "champion"
CANDIDATE = "candidate"
EXPERIMENT = "kz-recognizer"
LOADER_MODULE = "kzjobs.release.registry_model"  # the pyfunc's code: the installed package's
ARTIFACT = "bundle"  # the bundle folder's name in the model's data
BUNDLE_DATA = f"data/{ARTIFACT}"  # where MLflow keeps ``data_path`` in the model folder
BUNDLE_TAG = "bundle_sha256"  # the version tag holding the sha256 of its bundle.json
# The keys of the pyfunc flavor in a version kzjobs wrote (MLflow's own bookkeeping and
# our loader; MLflow writes ``code: null``). Anything else set (``code``,
# ``model_code_path``, ``python_model``, ``artifacts``) would make MLflow run code from
# the artifact.
PYFUNC_KEYS = frozenset({"loader_module", "data", "env", "python_version", "streamable"})


class UntrustedModelError(BundleIntegrityError):
    """A registered version that is not what kzjobs registered: never load it."""


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


def check_model_dir(model_dir: Path, version: ModelVersion) -> Path:
    """The bundle folder of a downloaded version, after checking that its ``MLmodel`` runs
    only the installed :mod:`kzjobs.release.registry_model` and that its manifest is the one
    registered. Raises :class:`UntrustedModelError` otherwise."""
    import yaml

    where = f"version {version.version} of {version.name} ({model_dir})"
    try:
        # MLflow's own Model.load reads MLmodel with yaml.safe_load too.
        flavors = yaml.safe_load((model_dir / "MLmodel").read_text())["flavors"]
        pyfunc = flavors["python_function"]
    except (OSError, KeyError, TypeError, yaml.YAMLError) as exc:
        raise UntrustedModelError(f"{where}: no readable pyfunc MLmodel ({exc})") from exc
    if set(flavors) != {"python_function"}:
        raise UntrustedModelError(f"{where}: MLmodel has flavors {sorted(flavors)}; "
                                  "kzjobs writes only python_function")
    if pyfunc.get("loader_module") != LOADER_MODULE:
        raise UntrustedModelError(
            f"{where}: MLmodel loads with {pyfunc.get('loader_module')!r}, not the installed "
            f"{LOADER_MODULE}: refusing to run code the registry names")
    if extra := sorted(k for k, v in pyfunc.items() if k not in PYFUNC_KEYS and v is not None):
        raise UntrustedModelError(f"{where}: MLmodel's pyfunc flavor has {extra}, which "
                                  "would run code stored in the artifact: refusing it")
    if pyfunc.get("data") != BUNDLE_DATA:
        raise UntrustedModelError(f"{where}: MLmodel's data is {pyfunc.get('data')!r}, "
                                  f"not {BUNDLE_DATA!r}")
    bundle = model_dir / BUNDLE_DATA
    expected = version.tags.get(BUNDLE_TAG)
    try:
        found = hashlib.sha256((bundle / BUNDLE_FILE).read_bytes()).hexdigest()
    except OSError as exc:
        raise UntrustedModelError(f"{where}: no {BUNDLE_FILE} ({exc})") from exc
    if found != expected:
        raise UntrustedModelError(
            f"{where}: {BUNDLE_FILE} has sha256 {found}, but the version's {BUNDLE_TAG} tag "
            f"is {expected}: the manifest is not the one registered")
    return bundle


def download_model(ref: str) -> tuple[Path, ModelVersion]:
    """The local model folder of a registered version (downloaded once per version),
    checked by :func:`check_model_dir`, and the version."""
    import mlflow

    version = get_version(ref)
    if version is None:
        raise LookupError(f"no registered version for {ref!r}")
    dest = (get_settings().home / "models" / version.name / str(version.version)).resolve()
    bundle = dest / BUNDLE_DATA
    if not (bundle / BUNDLE_FILE).is_file():
        client()  # sets the tracking and registry URIs
        dest.parent.mkdir(parents=True, exist_ok=True)
        # Download beside, then rename: concurrent jobs never see half a model.
        tmp = Path(tempfile.mkdtemp(prefix=f".{version.version}-", dir=dest.parent))
        try:
            mlflow.artifacts.download_artifacts(
                artifact_uri=version_ref(version.version, version.name), dst_path=str(tmp)
            )
            if dest.exists() and not (bundle / BUNDLE_FILE).is_file():
                shutil.rmtree(dest)  # a download cut short by a crash
            try:
                tmp.rename(dest)
            except OSError:  # another job finished first: use its copy
                if not (bundle / BUNDLE_FILE).is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    check_model_dir(dest, version)  # on every use: the local copy may be changed too
    return dest, version


def download_bundle(ref: str) -> Path:
    """The local bundle folder of a registered version (see :func:`download_model`);
    :func:`kzjobs.release.model_ref.open_bundle` checks its files against their hashes."""
    model_dir, _ = download_model(ref)
    return model_dir / BUNDLE_DATA


def load_model(ref: str) -> Any:
    """A registered version as a pyfunc, loaded only after :func:`check_model_dir`
    (MLflow then imports the installed :mod:`kzjobs.release.registry_model`, which checks the
    bundle's files)."""
    import mlflow

    model_dir, _ = download_model(ref)
    return mlflow.pyfunc.load_model(str(model_dir))
