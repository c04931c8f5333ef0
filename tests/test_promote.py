"""Promotion moves `champion` only for a better candidate, one promotion at a time."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from kzjobs.core.settings import get_settings
from kzjobs.data.dataset import Dataset


@pytest.fixture
def store(tmp_path):
    from kzjobs.core.store import open_store

    return open_store(tmp_path / "store")


def _candidate(store, make_bundle, make_heldout, tag: str, f1: float) -> int:
    """Register a blend whose held-out evaluation gave ``f1``; it becomes the candidate."""
    from kzjobs.release import jobs as release
    from kzjobs.release import registry

    make_bundle(store, f"runs/{tag}", tag=tag)
    make_heldout(store, "heldout")
    hv = registry.dataset_version(Dataset.open("heldout", store))
    ev = {"dataset": "heldout", "dataset_version": hv, "f1": f1,
          "by_book": {"ha": {"f1": f1}, "hb": {"f1": f1}}}
    return release.register_bundle(f"runs/{tag}", store, evaluation=ev, dataset="heldout",
                                    dataset_version=hv)["version"]


def _promote(store, **kwargs):
    from kzjobs.release.promote import PromoteJob

    return PromoteJob(store_uri=store.uri, profile_name="tiny", lock_timeout=30, **kwargs).run()


def _champion() -> int | None:
    from kzjobs.release.registry import get_version

    v = get_version("champion")
    return int(v.version) if v else None


def _tags(version: int) -> dict:
    from kzjobs.release.registry import get_version

    return get_version(version).tags


def test_first_better_worse_tie_on_postgres_and_s3(mlflow_on_postgres, store, make_bundle,
                                                   make_heldout):
    v1 = _candidate(store, make_bundle, make_heldout, "a", 0.50)
    out = _promote(store)
    assert (out["decision"], out["champion_after"], _champion()) == ("promoted", v1, v1)
    assert out["lock"] == "postgresql" and out["champion"] is None
    assert "first version" in _tags(v1)["promotion.reason"]

    v2 = _candidate(store, make_bundle, make_heldout, "b", 0.60)  # better
    out = _promote(store)
    assert (out["decision"], _champion()) == ("promoted", v2)
    assert (out["candidate_f1"], out["champion_f1"]) == (0.60, 0.50)
    tags = _tags(v2)
    assert tags["promotion.decision"] == "promoted"
    assert float(tags["promotion.candidate_f1"]) == 0.60
    assert float(tags["promotion.champion_f1"]) == 0.50
    assert tags["promotion.champion"] == str(v1)
    assert tags["promotion.heldout_version"] == tags["heldout_version"]

    v3 = _candidate(store, make_bundle, make_heldout, "c", 0.55)  # worse
    out = _promote(store)
    assert (out["decision"], _champion()) == ("rejected", v2)
    assert "below" in out["reason"] and _tags(v3)["promotion.decision"] == "rejected"

    v4 = _candidate(store, make_bundle, make_heldout, "d", 0.60)  # a tie keeps the champion
    out = _promote(store)
    assert (out["decision"], _champion()) == ("rejected", v2)
    assert out["reason"].startswith("tie")

    out = _promote(store, version=str(v2))  # by hand, the champion itself: nothing moves
    assert (out["decision"], _champion()) == ("kept", v2)
    assert v4 == 4


def test_a_candidate_that_does_not_load_is_rejected(mlflow_on_postgres, store, make_bundle,
                                                    make_heldout):
    import boto3

    v1 = _candidate(store, make_bundle, make_heldout, "a", 0.50)
    assert _promote(store)["decision"] == "promoted"
    v2 = _candidate(store, make_bundle, make_heldout, "b", 0.99)  # better on paper...
    bucket = mlflow_on_postgres.removeprefix("s3://")
    s3 = boto3.client("s3")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    lost = [k for k in keys if k.endswith("bundle/classify/resnet18/fold1/model.pt")]
    from kzjobs.release.registry import get_version

    model_id = get_version(v2).source.rstrip("/").split("/")[-1]  # models:/m-...
    lost = [k for k in lost if model_id in k]
    assert len(lost) == 1
    s3.delete_object(Bucket=bucket, Key=lost[0])  # ...but its weights were lost

    out = _promote(store)
    assert (out["decision"], _champion()) == ("rejected", v1)
    assert "candidate failed" in out["reason"] and "fold1/model.pt" in out["reason"]
    assert _tags(v2)["promotion.decision"] == "rejected"


def test_the_embedded_default_promotes_under_a_file_lock(store, make_bundle, make_heldout):
    v1 = _candidate(store, make_bundle, make_heldout, "a", 0.40)
    out = _promote(store)
    assert (out["decision"], out["lock"], _champion()) == ("promoted", "file", v1)
    assert get_settings().tracking_uri.startswith("sqlite:///")


def test_the_lock_is_exclusive_and_dies_with_its_holder(pg_uri, monkeypatch, store):
    """A promotion waits for another one to finish; a crashed holder frees the lock."""
    from kzjobs.release.promote import LockTimeout, PromoteJob, promotion_lock

    monkeypatch.setenv("KZ_MLFLOW_URI", pg_uri)
    get_settings.cache_clear()
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\n"
         "from kzjobs.release.promote import promotion_lock\n"
         "with promotion_lock('kz-recognizer', timeout=30):\n"
         "    print('held', flush=True)\n"
         "    time.sleep(600)\n"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        start = time.monotonic()
        with pytest.raises(LockTimeout):
            PromoteJob(store_uri=store.uri, profile_name="tiny", lock_timeout=1.5).run()
        assert time.monotonic() - start >= 1.5  # it waited for the lock, then gave up
        with pytest.raises(LockTimeout), promotion_lock("kz-recognizer", timeout=0.5, poll=0.1):
            pass
        with promotion_lock("another-model", timeout=0.5) as kind:  # other names are free
            assert kind == "postgresql"
    finally:
        holder.kill()  # a crash: no unlock, the server drops the session's lock
        holder.wait()
    with promotion_lock("kz-recognizer", timeout=10, poll=0.1) as kind:
        assert kind == "postgresql"


def test_a_file_lock_excludes_too(store):
    from kzjobs.release.promote import LockTimeout, promotion_lock

    with promotion_lock("kz-recognizer", timeout=1) as kind:
        assert kind == "file"
        with pytest.raises(LockTimeout), promotion_lock("kz-recognizer", timeout=0.3):
            pass


def test_a_tracking_server_without_a_lock_database_is_refused(monkeypatch, store):
    from kzjobs.release.promote import promotion_lock

    monkeypatch.setenv("KZ_MLFLOW_URI", "http://mlflow.example:5000")
    get_settings.cache_clear()
    with pytest.raises(RuntimeError, match="KZ_LOCK_URI"), promotion_lock("kz-recognizer"):
        pass
