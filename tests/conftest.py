"""Shared fixtures: a real S3 (moto's server over HTTP on 127.0.0.1) and isolated state."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


# Directories whose tests share a costly session-scoped fixture (the classifier tests: one
# trained tiny model), kept on one xdist worker so that it is made once.
ONE_WORKER_DIRS = ("tests/classify/",)


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """pyproject's ``-n 2 --dist loadfile``: each file runs whole on one worker, so its
    module-scoped fixtures are made once, and so do ``ONE_WORKER_DIRS``. (pytest-xdist's
    ``loadgroup`` would do it with marks, but it renames node ids in a way pytest 9.2 no
    longer reads.)"""
    from xdist.scheduler import LoadScopeScheduling

    class ByFile(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return next((d for d in ONE_WORKER_DIRS if path.startswith(d)), path)

    return ByFile(config, log)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files that train models (a ``slow`` test) first, so that the two workers end at
    about the same time; the sort is stable, so each file's tests keep their order."""
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, proc: subprocess.Popen, what: str, *, seconds: float = 120,
                  log: Callable[[], str] = lambda: "") -> None:
    """Wait until ``url`` answers (any HTTP status but a refused connection) while the
    server ``proc`` runs; else stop its process group and fail with ``log()``'s tail."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            urllib.request.urlopen(url, timeout=5)
            return
        except urllib.error.HTTPError:
            return  # it answers: up, and asking for a login perhaps
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGTERM)
                raise RuntimeError(f"{what} did not start:\n{log()[-4000:]}") from None
            time.sleep(1)


@pytest.fixture(scope="session")
def _mlflow_db_template(request: pytest.FixtureRequest) -> Path:
    """An empty, migrated MLflow SQLite DB, kept in pytest's cache per MLflow version:
    migrating a new DB costs ~15 s, copying one costs nothing."""
    from importlib.metadata import version

    from filelock import FileLock

    path = request.config.cache.mkdir(f"mlflow-db-{version('mlflow')}") / "mlflow.db"
    with FileLock(path.with_suffix(".lock")):  # xdist's workers share the cache
        if path.exists():
            return path
        from mlflow import MlflowClient

        tmp = path.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        uri = f"sqlite:///{tmp}"
        client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        client.search_experiments()
        client.search_registered_models()
        tmp.rename(path)
    return path


@pytest.fixture(autouse=True)
def _isolated_home(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    _mlflow_db_template: Path,
):
    """Every test gets its own var/ (store, MLflow DB) so tests never share state."""
    from kzjobs.core.settings import get_settings

    home = tmp_path_factory.mktemp("kzhome")
    shutil.copyfile(_mlflow_db_template, home / "mlflow.db")
    monkeypatch.setenv("KZ_HOME", str(home))
    for var in ("KZ_STORE", "KZ_MLFLOW_URI"):
        monkeypatch.delenv(var, raising=False)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server, bound to 127.0.0.1 on a free port, for the whole session."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_env(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """AWS settings pointing boto3 at the moto server; returns a fresh bucket's URI."""
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    bucket = f"kz-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    return f"s3://{bucket}"


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path):
    """The same tests run on both backends."""
    from kzjobs.core.store import open_store

    if request.param == "local":
        return open_store(tmp_path / "store")
    return open_store(request.getfixturevalue("s3_env") + "/prefix/x")


# ---- PostgreSQL and MLflow (registry, promotion) ------------------------------------

PG_ADMIN_URI = os.environ.get("KZ_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


@pytest.fixture
def pg_uri() -> Iterator[str]:
    """A fresh PostgreSQL database with a unique name, dropped after the test."""
    from bench.airflow_cluster import temporary_database

    with temporary_database(PG_ADMIN_URI, prefix="kz_test") as uri:
        yield uri


@pytest.fixture
def mlflow_on_postgres(
    pg_uri: str, s3_env: str, s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> str:
    """The production shape of the registry: MLflow on PostgreSQL with S3 artifacts.

    Returns the artifact bucket's URI.
    """
    from kzjobs.core.settings import get_settings

    monkeypatch.setenv("KZ_MLFLOW_URI", pg_uri)
    monkeypatch.setenv("KZ_MLFLOW_ARTIFACTS", f"{s3_env}/mlflow")
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", s3_endpoint)
    monkeypatch.delenv("KZ_LOCK_URI", raising=False)
    get_settings.cache_clear()
    return s3_env


def write_test_bundle(store, prefix: str, *, tag: str = "a", folds: int = 2):
    """A bundle's files (opaque bytes: the registry never reads weights) and its manifest."""
    from kzjobs.release.bundle import Bundle, Level2Files

    root = store.child(prefix)
    files = {f"detect/fold{k}/model.pt": f"det-{tag}-{k}" for k in range(folds)}
    files |= {f"classify/resnet18/fold{k}/model.pt": f"cls-{tag}-{k}" for k in range(folds)}
    files |= {f"level2/fold{k}/lgb.txt": f"lgb-{tag}-{k}" for k in range(folds)}
    files |= {f"level2/fold{k}/xgb.ubj": f"xgb-{tag}-{k}" for k in range(folds)}
    files |= {"level2/meta.json": "{}", "level2/vocab.json": "[]",
              "vocabulary.json": '{"U+3042": "あ"}'}
    for key, text in files.items():
        root.write_text(key, text)
    bundle = Bundle(
        profile="tiny",
        detector=[f"detect/fold{k}/model.pt" for k in range(folds)],
        classifiers={"resnet18": [f"classify/resnet18/fold{k}/model.pt" for k in range(folds)]},
        level2=Level2Files(lightgbm=[f"level2/fold{k}/lgb.txt" for k in range(folds)],
                           xgboost=[f"level2/fold{k}/xgb.ubj" for k in range(folds)]),
        vocabulary="vocabulary.json",
    )
    bundle.save(root)
    return bundle, files


def write_test_oof(store, run: str, winners: dict[int, list[str]]) -> None:
    """Each fold's OOF predictions of ``resnet18``: one box per code in ``winners[fold]``,
    that code its top class."""
    import torch

    from kzjobs.classify.predict import page_table, table_bytes
    from kzjobs.data.format import Box

    vocab = ["U+3042", "U+3044", "seg_fp"]
    for fold, codes in winners.items():
        boxes = [Box("", 10 * i, 10, 8, 8) for i in range(len(codes))]
        logits = torch.tensor([[2.0 if v == c else 0.0 for v in vocab] for c in codes])
        table = page_table(f"h{fold}_001", boxes, logits, vocab, top_k=3, kind="resnet18",
                           fold=fold)
        store.write_bytes(f"{run}/classify/resnet18/fold{fold}/oof.parquet", table_bytes(table))


def write_test_heldout(store, key: str, books=("ha", "hb")) -> None:
    """A labelled held-out dataset: train.csv and its image files."""
    rows = ["image_id,labels"]
    for book in books:
        image_id = f"{book}_001"
        rows.append(f"{image_id},U+3042 10 10 20 20 U+3044 40 10 20 20")
        store.write_bytes(f"{key}/images/{image_id}.jpg", b"\xff\xd8 not decoded here")
    store.write_text(f"{key}/train.csv", "\n".join(rows) + "\n")


def register_test_bundle(store, tag: str = "a", f1: float = 0.5) -> int:
    """Write a test bundle at ``runs/<tag>`` and a held-out set, register the bundle with
    held-out ``f1``; its registry version."""
    from kzjobs.data.dataset import Dataset
    from kzjobs.release import jobs as release
    from kzjobs.release import registry

    write_test_bundle(store, f"runs/{tag}", tag=tag)
    write_test_heldout(store, "heldout")
    hv = registry.dataset_version(Dataset.open("heldout", store))
    ev = {"dataset": "heldout", "dataset_version": hv, "f1": f1, "by_book": {}}
    return release.register_bundle(f"runs/{tag}", store, evaluation=ev, dataset="heldout",
                                    dataset_version=hv)["version"]


@pytest.fixture
def make_bundle():
    return write_test_bundle


@pytest.fixture
def make_oof():
    return write_test_oof


@pytest.fixture
def make_heldout():
    return write_test_heldout
