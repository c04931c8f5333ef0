"""Storage faults: S3 behind the project's fault proxy (real HTTP, real moto, real boto3).

Transient faults (500, 503, throttling, dropped connections, bodies cut short) are
retried away: operations and the recognition job succeed with the same bytes as without
faults. Faults that outlast the retries fail loudly, naming the key, and a re-run with
the faults gone completes. Every test checks that the proxy really injected its faults.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError

from kzjobs.core.store import Store, StoreError, open_store
from tests.reliability.fault_proxy import (
    FAULTS,
    Fault,
    FaultProxy,
    FaultyBucket,
    Rule,
    create_bucket,
)

THROTTLES = ("slow_down", "throttling")  # botocore backs these off from 1 s, not 50 ms


def payload(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def moto_bytes(bucket: FaultyBucket, key: str) -> bytes:
    """An object as moto holds it, read past the proxy."""
    client = boto3.client("s3", endpoint_url=bucket.upstream)
    return client.get_object(Bucket=bucket.bucket, Key=key)["Body"].read()


def use_max_attempts(monkeypatch: pytest.MonkeyPatch, attempts: int) -> None:
    from kzjobs.core.settings import get_settings

    monkeypatch.setenv("KZ_S3_MAX_ATTEMPTS", str(attempts))
    get_settings.cache_clear()


# ---- the proxy itself ----------------------------------------------------------------


def test_proxy_follows_its_plan_exactly(faulty_bucket: FaultyBucket) -> None:
    """Without retries every planned fault reaches the client, and nothing else does."""
    proxy = faulty_bucket.proxy
    no_retries = Config(retries={"mode": "standard", "total_max_attempts": 1})
    client = boto3.client("s3", config=no_retries)
    bucket = faulty_bucket.bucket

    def outcomes(n: int, key: str) -> list[str]:
        got = []
        for _ in range(n):
            try:
                client.put_object(Bucket=bucket, Key=key, Body=b"x")
                got.append("ok")
            except ClientError as exc:
                got.append(exc.response["Error"]["Code"])
            except ConnectionClosedError:
                got.append("closed")
        return got

    proxy.set_plan(Rule("internal_error", key=r"^first/", times=2),
                   Rule(("service_unavailable", "drop"), key=r"^every/", every=3),
                   Rule("throttling", key=r"^rate/", rate=0.5, seed=7))
    assert outcomes(4, "first/a") == ["InternalError", "InternalError", "ok", "ok"]
    assert outcomes(7, "every/a") == ["ok", "ok", "ServiceUnavailable",
                                      "ok", "ok", "closed", "ok"]
    rate = outcomes(20, "rate/a")
    proxy.set_plan(Rule("throttling", key=r"^rate/", rate=0.5, seed=7))
    assert outcomes(20, "rate/a") == rate  # seeded: the same draws again
    assert 3 <= rate.count("Throttling") <= 17 and "ok" in rate
    assert proxy.requests == 4 + 7 + 20 + 20
    assert proxy.faults == {"internal_error": 2, "service_unavailable": 1, "drop": 1,
                            "throttling": 2 * rate.count("Throttling")}
    proxy.faults_off()
    assert outcomes(3, "first/a") == ["ok"] * 3


# ---- store operations ----------------------------------------------------------------


def exercise(store: Store, blob: bytes) -> None:
    """Every store operation once, checking each result."""
    doc = {"page": "synzA_000", "text": "あいう", "n": [1, 2, 3]}
    store.write_bytes("a/blob.bin", blob)
    store.write_json("a/doc.json", doc)
    assert store.read_bytes("a/blob.bin") == blob
    assert store.read_json("a/doc.json") == doc
    assert store.exists("a/blob.bin") and not store.exists("a/none.bin")
    assert store.list("a") == ["a/blob.bin", "a/doc.json"]
    store.delete("a/doc.json")
    assert store.list("a") == ["a/blob.bin"]
    assert not store.exists("a/doc.json")
    with pytest.raises(KeyError):
        store.read_bytes("a/doc.json")


@pytest.mark.parametrize("fault", FAULTS)
def test_store_operations_retry_through_faults(faulty_bucket: FaultyBucket, fault: Fault) -> None:
    """Each HTTP method's first request fails (twice in a row for the cheap faults)."""
    proxy = faulty_bucket.proxy
    times = 1 if fault in THROTTLES else 2
    proxy.set_plan(*(Rule(fault, method=m, times=times) for m in ("PUT", "GET", "HEAD", "DELETE")))
    store = open_store(f"{faulty_bucket.uri}/pre/fix")
    blob = payload(300_000, seed=1)

    exercise(store, blob)

    # Every method met its faults (a test whose faults never fired would prove nothing).
    assert proxy.faults == {fault: 4 * times}
    methods = {e.method for e in proxy.injected()}
    assert methods == {"PUT", "GET", "HEAD", "DELETE"}
    assert moto_bytes(faulty_bucket, "pre/fix/a/blob.bin") == blob


def test_mixed_faults_on_many_objects(faulty_bucket: FaultyBucket) -> None:
    """A seeded third of all requests fail, cycling through every cheap fault kind."""
    proxy = faulty_bucket.proxy
    cheap = tuple(f for f in FAULTS if f not in THROTTLES)
    proxy.set_plan(Rule(cheap, rate=0.35, seed=11))
    store = open_store(f"{faulty_bucket.uri}/mixed")
    blobs = {f"obj/{i:02d}.bin": payload(20_000 + 997 * i, seed=i) for i in range(16)}
    for key, data in blobs.items():
        store.write_bytes(key, data)
    assert store.list("obj") == sorted(blobs)
    assert {key: store.read_bytes(key) for key in blobs} == blobs
    assert proxy.faults.keys() == set(cheap), proxy.faults
    assert sum(proxy.faults.values()) >= 10


OUTLASTING: list[tuple[str, Fault]] = [
    ("write", "drop"),
    ("write", "internal_error"),
    ("read", "truncate"),
    ("read", "service_unavailable"),
    ("exists", "service_unavailable"),
    ("list", "drop_after"),
    ("delete", "internal_error"),
]


@pytest.mark.parametrize(("op", "fault"), OUTLASTING)
def test_faults_outlasting_retries_fail_loudly_then_succeed(
    faulty_bucket: FaultyBucket, monkeypatch: pytest.MonkeyPatch, op: str, fault: Fault
) -> None:
    proxy = faulty_bucket.proxy
    use_max_attempts(monkeypatch, 3)
    store = open_store(f"{faulty_bucket.uri}/run")
    key = "deep/er/object.json"
    store.write_json(key, {"v": 1})
    actions = {
        "write": lambda: store.write_json(key, {"v": 2}),
        "read": lambda: store.read_json(key),
        "exists": lambda: store.exists(key),
        "list": lambda: store.list("deep/er"),
        "delete": lambda: store.delete(key),
    }
    # A listing names its prefix, in the request's query and in the error.
    named = "deep/er" if op == "list" else key
    proxy.set_plan(Rule(fault, key=re.escape(named)))

    with pytest.raises(StoreError, match=re.escape(repr(named))):
        actions[op]()
    # Exactly the attempt budget was spent on the key: retried, then given up.
    assert len(proxy.injected(re.escape(named))) == 3
    assert proxy.faults == {fault: 3}

    proxy.faults_off()
    expected = {"write": None, "read": {"v": 1}, "exists": True, "list": [key],
                "delete": None}[op]
    assert actions[op]() == expected
    assert store.exists(key) == (op != "delete")
    if op == "write":
        assert store.read_json(key) == {"v": 2}


# ---- the recognition job ---------------------------------------------------------------


def write_collection_and_bundle(store: Store) -> None:
    """As tests/recognize: a synthetic page and a corrupt one, a seeded untrained blend."""
    from bench.workload import write_seeded_bundle
    from kzjobs.synth import generate

    generate(store.child("coll"), books=1, pages_per_book=1, seed=3, fonts=["ipaex-mincho"],
             labelled=False)
    store.write_bytes("coll/images/synzA_009.jpg", b"\xff\xd8\xff\xe0 truncated")
    write_seeded_bundle(store, "model")


def recognize(uri: str, out: str) -> dict[str, Any]:
    from kzjobs.recognize.job import RecognizeJob

    return RecognizeJob(store_uri=uri, profile_name="tiny", model="model", collection="coll",
                        out=out, progress=False, device="cpu").run()


def outputs(store: Store, out: str) -> dict[str, bytes]:
    """Every output, keyed below ``out``, with ``out`` itself (named in the report) masked."""
    return {key[len(out) + 1:]: store.read_bytes(key).replace(out.encode(), b"<out>")
            for key in store.list(out)}


@pytest.fixture(scope="module")
def recognized(s3_endpoint: str, tmp_path_factory: pytest.TempPathFactory,
               ) -> Iterator[tuple[str, dict[str, bytes]]]:
    """A bucket with the collection and the blend, and a fault-free run's outputs.

    Built straight on moto: the proxy only ever sees the runs under test.
    """
    from kzjobs.core.settings import get_settings

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_ENDPOINT_URL", s3_endpoint)
        mp.setenv("AWS_ACCESS_KEY_ID", "testing")
        mp.setenv("AWS_SECRET_ACCESS_KEY", "testing")
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        mp.setenv("KZ_HOME", str(tmp_path_factory.mktemp("kzhome")))
        get_settings.cache_clear()
        uri = f"s3://{create_bucket(s3_endpoint)}"
        store = open_store(uri)
        write_collection_and_bundle(store)
        summary = recognize(uri, "out/clean")
        assert summary["merge"]["recognized"] == 1 and summary["merge"]["quarantined"] == 1
        assert summary["merge"]["characters"] > 0
        clean = outputs(store, "out/clean")
        get_settings.cache_clear()
    assert {"submission.csv", "report.json", "quarantine.json"} <= clean.keys()
    yield uri, clean


def test_recognize_job_succeeds_through_faults_with_identical_outputs(
    recognized: tuple[str, dict[str, bytes]], s3_via_proxy: FaultProxy
) -> None:
    uri, clean = recognized
    proxy = s3_via_proxy
    cheap = tuple(f for f in FAULTS if f not in THROTTLES)
    # Faults aimed at the inputs (the blend, the pages) and the outputs, then every 4th
    # request of any kind, cycling through the cheap faults.
    proxy.set_plan(Rule("slow_down", method="GET", key=r"^model/detect\.pt$", times=1),
                   Rule(("truncate", "drop"), method="GET", key=r"^coll/images/", times=2),
                   Rule("drop_after", method="PUT", key=r"^out/faulty/pages/", times=2),
                   Rule("throttling", method="PUT", key=r"/submission\.csv$", times=1),
                   Rule(cheap, every=4))

    summary = recognize(uri, "out/faulty")
    faulted = proxy.injected()
    proxy.faults_off()

    assert summary["merge"]["recognized"] == 1 and summary["merge"]["quarantined"] == 1
    assert outputs(open_store(uri), "out/faulty") == clean
    assert {e.fault for e in faulted} == set(FAULTS)
    hit = {(e.method, e.subject.split("/")[0]) for e in faulted}
    assert {("GET", "model"), ("GET", "coll"), ("PUT", "out")} <= hit
    assert len(faulted) >= 12, faulted


def test_recognize_job_fails_loudly_naming_the_key_then_reruns(
    recognized: tuple[str, dict[str, bytes]], s3_via_proxy: FaultProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    uri, clean = recognized
    proxy = s3_via_proxy
    use_max_attempts(monkeypatch, 3)
    broken = "out/broken/submission.csv"  # the merged output, written after every page
    proxy.set_plan(Rule("internal_error", method="PUT", key=f"^{re.escape(broken)}$"))

    with pytest.raises(StoreError, match=re.escape(repr(broken))):
        recognize(uri, "out/broken")
    # The attempt budget, all spent on that key; the pages done before it are kept.
    assert [e.subject for e in proxy.injected()] == [broken] * 3
    store = open_store(uri)
    assert not store.exists(broken) and not store.exists("out/broken/report.json")
    assert len(store.list("out/broken/pages")) == 1

    proxy.faults_off()
    again = recognize(uri, "out/broken")
    assert (again["already_done"], again["recognized"], again["quarantined"]) == (2, 0, 0)
    assert outputs(store, "out/broken") == clean


def test_cli_recognize_exits_nonzero_naming_the_key(
    recognized: tuple[str, dict[str, bytes]], s3_via_proxy: FaultProxy,
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    """Through the command line (what a container or an Airflow task runs)."""
    from typer.testing import CliRunner

    from kzjobs.cli import app

    uri, _clean = recognized
    use_max_attempts(monkeypatch, 2)
    key = "model/classify.pt"
    s3_via_proxy.set_plan(Rule("drop", method="GET", key=f"^{re.escape(key)}$"))
    result = CliRunner().invoke(app, ["recognize", "--model", "model", "--collection", "coll",
                                      "--out", "out/cli", "--store", uri, "--profile", "tiny"])
    assert result.exit_code != 0
    assert isinstance(result.exception, StoreError)
    assert repr(key) in str(result.exception)
    assert len(s3_via_proxy.injected()) == 2


def test_validate_batch_fails_loudly_on_an_unreadable_store_then_reruns(
    recognized: tuple[str, dict[str, bytes]], s3_via_proxy: FaultProxy,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A store that cannot serve a page is an outage, not a bad page: no quarantine."""
    from kzjobs.validate.job import ValidateJob

    uri, _clean = recognized
    use_max_attempts(monkeypatch, 2)
    store = open_store(uri)
    good = next(k for k in store.list("coll/images") if "synzA_009" not in k)

    def validate() -> dict[str, Any]:
        return ValidateJob(store_uri=uri, profile_name="tiny", dataset="coll", kind="batch",
                           out="validation/faulty").run()

    s3_via_proxy.set_plan(Rule("drop", method="GET", key=f"^{re.escape(good)}$"))
    with pytest.raises(StoreError, match=re.escape(repr(good))):
        validate()
    assert len(s3_via_proxy.injected()) == 2
    assert not store.exists("validation/faulty/report.json")

    # Transient faults on every image are retried away; the corrupt page alone is out.
    s3_via_proxy.set_plan(Rule("internal_error", method="GET", key=r"^coll/images/", times=2))
    report = validate()
    assert (report["passed"], report["quarantined"]) == (1, 1)
    assert store.read_json("validation/faulty/quarantine.json")[0]["item"] == "synzA_009"
    assert s3_via_proxy.faults == {"drop": 2, "internal_error": 2}


def test_a_write_once_whose_answer_was_lost_is_not_refused_by_its_own_retry(
        faulty_bucket: FaultyBucket) -> None:
    """The server stored the conditional PUT, then the connection dropped before its
    answer: botocore's retry meets its own object (412). Same bytes: done, not a refusal;
    other bytes under the same fault are still refused."""
    from kzjobs.core.store import KeyExistsError

    proxy = faulty_bucket.proxy
    store = open_store(f"{faulty_bucket.uri}/out")
    report = payload(20_000, seed=3)
    proxy.set_plan(Rule("drop_after", method="PUT", key=r"report\.json$", times=1))
    assert store.write_once("report.json", report) is False  # the first attempt wrote it
    assert proxy.faults == {"drop_after": 1}
    assert moto_bytes(faulty_bucket, "out/report.json") == report
    proxy.set_plan(Rule("drop_after", method="PUT", key=r"report\.json$", times=1))
    with pytest.raises(KeyExistsError):
        store.write_once("report.json", payload(20_000, seed=4))
    assert moto_bytes(faulty_bucket, "out/report.json") == report
