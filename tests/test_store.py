"""The store: one behaviour on a local folder and on S3 (moto over HTTP)."""

from __future__ import annotations

import threading

import pytest

from kzjobs.core.store import LocalStore, UnsafeKeyError, join, open_store, validate_key


def test_round_trip_and_exists(store):
    assert not store.exists("a/b.txt")
    store.write_bytes("a/b.txt", b"hello")
    assert store.exists("a/b.txt")
    assert store.read_bytes("a/b.txt") == b"hello"
    store.write_bytes("a/b.txt", b"again")
    assert store.read_bytes("a/b.txt") == b"again"


def test_missing_key_is_keyerror(store):
    with pytest.raises(KeyError):
        store.read_bytes("nope/missing.bin")


def test_list_by_prefix_is_recursive_sorted_and_scoped(store):
    for key in ("d/2.txt", "d/1.txt", "d/sub/3.txt", "dx/4.txt", "e.txt"):
        store.write_bytes(key, b"x")
    assert store.list("d") == ["d/1.txt", "d/2.txt", "d/sub/3.txt"]
    assert store.list("") == ["d/1.txt", "d/2.txt", "d/sub/3.txt", "dx/4.txt", "e.txt"]
    assert store.list("none") == []


def test_delete(store):
    store.write_bytes("k.bin", b"1")
    store.delete("k.bin")
    assert not store.exists("k.bin")
    store.delete("k.bin")  # deleting twice is fine


def test_delete_leaves_no_empty_folder_and_keeps_the_others(tmp_path):
    store = LocalStore(tmp_path / "root")
    store.write_bytes("frames/a/1.bin", b"1")
    store.write_bytes("frames/2.bin", b"2")
    store.delete("frames/a/1.bin")
    assert not (store.root / "frames" / "a").exists()  # as in S3: no key, no folder
    assert store.list("frames") == ["frames/2.bin"]
    store.delete("frames/2.bin")
    assert not (store.root / "frames").exists() and store.root.is_dir()
    store.write_bytes("frames/3.bin", b"3")  # a writer after the delete makes it again
    assert store.read_bytes("frames/3.bin") == b"3"


def test_json_and_text_helpers(store):
    store.write_json("r/report.json", {"ok": True, "名": [1, 2]})
    assert store.read_json("r/report.json") == {"ok": True, "名": [1, 2]}
    store.write_text("t.txt", "かな")
    assert store.read_text("t.txt") == "かな"


def test_child_store_is_scoped(store):
    child = store.child("runs/r1")
    child.write_bytes("x.txt", b"1")
    assert store.read_bytes("runs/r1/x.txt") == b"1"
    assert child.list("") == ["x.txt"]


@pytest.mark.parametrize(
    "key", ["../x", "a/../../x", "/etc/passwd", "a//b", "a\\b", "", ".", "a/./b", "a\x00b", "a b"]
)
def test_unsafe_keys_rejected_on_every_operation(store, key):
    with pytest.raises(UnsafeKeyError):
        store.write_bytes(key, b"x")
    with pytest.raises(UnsafeKeyError):
        store.read_bytes(key)
    with pytest.raises(UnsafeKeyError):
        store.exists(key)


def test_validate_key_and_join():
    assert validate_key("a/b-c_d.e@1") == "a/b-c_d.e@1"
    assert join("runs", "/r1/", "x.json") == "runs/r1/x.json"
    with pytest.raises(UnsafeKeyError):
        join("runs", "..", "x")


def test_local_writes_are_atomic(tmp_path):
    """A reader racing a writer sees the old or the new object, never a partial one."""
    store = LocalStore(tmp_path)
    old, new = b"a" * 2_000_000, b"b" * 2_000_000
    store.write_bytes("big.bin", old)
    seen: set[bytes] = set()
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            data = store.read_bytes("big.bin")
            seen.add(data[:1] + data[-1:] + len(data).to_bytes(4, "big"))

    thread = threading.Thread(target=reader)
    thread.start()
    for _ in range(20):
        store.write_bytes("big.bin", new)
        store.write_bytes("big.bin", old)
    stop.set()
    thread.join()
    size = len(old).to_bytes(4, "big")
    assert seen <= {b"aa" + size, b"bb" + size}
    assert store.list("") == ["big.bin"]  # no temporary files left behind


def test_failed_local_write_leaves_no_trace(tmp_path):
    store = LocalStore(tmp_path)
    with pytest.raises(TypeError):
        store.write_bytes("x.bin", object())  # type: ignore[arg-type]
    assert store.list("") == []
    assert not store.exists("x.bin")


def test_open_store_picks_backend(tmp_path, s3_env):
    assert isinstance(open_store(tmp_path), LocalStore)
    assert open_store(f"file://{tmp_path}").uri == str(tmp_path.resolve())
    s3 = open_store(s3_env + "/p")
    assert s3.uri == s3_env + "/p"


def test_default_store_lives_under_home(tmp_path, monkeypatch):
    from kzjobs.core.settings import get_settings

    monkeypatch.setenv("KZ_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    assert open_store().uri == str((tmp_path / "home" / "store").resolve())


def test_s3_uses_botocore_standard_retries(s3_env):
    s3 = open_store(s3_env)
    retries = s3.client.meta.config.retries
    assert retries["mode"] == "standard"
    assert retries["total_max_attempts"] >= 3 or retries.get("max_attempts", 0) >= 3


def test_s3_errors_name_the_key(s3_env, monkeypatch):
    from kzjobs.core.store import StoreError

    s3 = open_store("s3://no-such-bucket-kz/p")
    with pytest.raises(StoreError, match=r"x/y\.bin"):
        s3.write_bytes("x/y.bin", b"1")


# ---- write-once outputs and checksums ---------------------------------------------------


def test_write_once_creates_keeps_identical_bytes_and_refuses_others(store):
    from kzjobs.core.store import KeyExistsError

    assert store.write_once("out/report.json", b"first") is True
    # The same bytes again (a re-run finishing a crashed one): nothing to do.
    assert store.write_once("out/report.json", b"first") is False
    with pytest.raises(KeyExistsError, match=r"out/report\.json.*never overwritten"):
        store.write_once("out/report.json", b"second")
    assert store.read_bytes("out/report.json") == b"first"
    # Through a child store too: the backend's own create, not a check-then-write.
    child = store.child("out")
    with pytest.raises(KeyExistsError):
        child.write_once("report.json", b"third")
    assert child.write_once("submission.csv", b"rows") is True
    assert store.list("out") == ["out/report.json", "out/submission.csv"]
    # write_bytes stays an overwrite, for resumable work (pages, checkpoints).
    store.write_bytes("out/report.json", b"rewritten")
    assert store.read_bytes("out/report.json") == b"rewritten"


def test_write_once_has_one_winner_among_racing_writers(store):
    """Writers racing for one key: exactly one creates it, every other one is refused,
    and the key holds the winner's bytes whole (no check-then-write window)."""
    from concurrent.futures import ThreadPoolExecutor

    from kzjobs.core.store import KeyExistsError

    def attempt(n: int) -> bytes | None:
        data = bytes([65 + n]) * 100_000
        try:
            return data if store.write_once("race.bin", data) else None
        except KeyExistsError:
            return None

    with ThreadPoolExecutor(8) as pool:
        won = [d for d in pool.map(attempt, range(8)) if d is not None]
    assert len(won) == 1
    assert store.read_bytes("race.bin") == won[0]
    assert store.list("") == ["race.bin"]  # no temporary file left by the losers


def test_local_write_once_is_atomic_and_leaves_no_trace(tmp_path):
    store = LocalStore(tmp_path)
    with pytest.raises(TypeError):
        store.write_once("x.bin", object())  # type: ignore[arg-type]
    assert store.list("") == [] and not any(tmp_path.iterdir())
    store.write_once("a/x.bin", b"1")
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["x.bin"]  # the temp file is gone
    assert (tmp_path / "a" / "x.bin").stat().st_nlink == 1


def test_s3_write_once_is_a_conditional_put_the_server_refuses(s3_env):
    """moto's server answers 412 to ``If-None-Match: *`` on an existing key, over HTTP:
    the refusal is the server's, so two jobs on two machines cannot both publish."""
    import boto3
    from botocore.exceptions import ClientError

    s3 = open_store(s3_env + "/p")
    s3.write_once("submission.csv", b"rows")
    bucket = s3_env.removeprefix("s3://")
    with pytest.raises(ClientError) as raised:
        boto3.client("s3").put_object(Bucket=bucket, Key="p/submission.csv", Body=b"other",
                                      IfNoneMatch="*")
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert s3.read_bytes("submission.csv") == b"rows"


@pytest.mark.parametrize("write", ["write_bytes", "write_once"])
def test_s3_uploads_carry_a_sha256_the_server_keeps(s3_env, write):
    import base64
    import hashlib

    import boto3

    data = "くずし字".encode() * 1000
    s3 = open_store(s3_env + "/p")
    getattr(s3, write)("k.bin", data)
    head = boto3.client("s3").head_object(Bucket=s3_env.removeprefix("s3://"), Key="p/k.bin",
                                          ChecksumMode="ENABLED")
    assert head["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(data).digest()).decode()
