"""The bad-input corpus through the whole of ``kz_recognize``.

Every bad kind that a collection of page images can hold (the corpus's batch kinds:
corrupt, empty, mislabelled, bomb, float TIFF, broken PDF, tiny, duplicate ids, unsafe
names, unsupported GIF and text files) is mixed into a real synthetic collection, which
then runs through the DAG with ``dag.test()``: validate -> recognize in two shards
(``kzjobs`` subprocesses) -> merge.
Nothing is lost: every file in is either recognized once or quarantined with its reason.
"""

from __future__ import annotations

import csv
import io
from collections import Counter

import pytest

from kzjobs.core.settings import get_settings
from kzjobs.core.store import Store, open_store

COLLECTION = "incoming/mixed"
OUT = "predictions/incoming-mixed"  # the plan's output prefix for COLLECTION


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A store with a seeded blend and a real collection with every bad batch kind mixed in."""
    from bench.workload import write_seeded_bundle
    from kzjobs.core.profile import load_profile
    from kzjobs.synth import generate
    from kzjobs.validate.corpus import write_bad_images

    store = open_store(tmp_path_factory.mktemp("bad-input") / "store")
    coll = store.child(COLLECTION)
    generate(coll, books=2, pages_per_book=2, seed=5, fonts=["ipaex-mincho"], labelled=False)
    good = sorted(k.rsplit("/", 1)[-1].rsplit(".", 1)[0] for k in coll.list("images"))
    bad = write_bad_images(coll, max_pixels=load_profile("tiny").validation.max_pixels)
    write_seeded_bundle(store, "model")
    return {"store": store, "good": good, "bad": bad, "files": coll.list("images")}


def _submission_ids(data: bytes) -> list[str]:
    """Every row's id, duplicates kept (read_submission would refuse them, not count them)."""
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"))))
    assert rows[0] == ["image_id", "labels"]
    return [r[0] for r in rows[1:]]


def _env(store: Store) -> dict[str, str]:
    # A task that is retried (recognize shards are) waits 1 s, not Airflow's default 300 s.
    return {"KZ_HOME": str(get_settings().home), "KZ_STORE": store.uri, "KZ_LAUNCHER": "local",
            "AIRFLOW__CORE__DEFAULT_TASK_RETRY_DELAY": "1"}


def test_every_bad_kind_through_kz_recognize_reconciles(mixed, run_dag):
    store, good, bad = mixed["store"], mixed["good"], mixed["bad"]
    assert len(good) == 4 and len({r for _, r in bad}) >= 10  # the mix is what we think

    out = run_dag("kz_recognize", {"collection": COLLECTION, "profile": "tiny",
                                   "model": "model", "shards": 2}, **_env(store))
    assert out["state"] == "success", out
    assert set(out["tasks"].values()) == {"success"}, out["tasks"]
    assert {"recognize[0]", "recognize[1]", "merge"} <= set(out["tasks"])

    # The report: counts reconcile, every file in is counted once.
    report = store.read_json(f"{OUT}/report.json")
    files_in = len(mixed["files"])
    assert files_in == len(good) + len(bad)
    assert report["pages_in"] == files_in
    assert report["pages_in"] == report["recognized"] + report["quarantined"]
    assert report["recognized"] == len(good)
    assert report["quarantined"] == len(report["quarantine"]) == len(bad)

    # Each quarantined file has its expected reason (a duplicate id once per copy).
    quarantine = report["quarantine"]
    assert Counter(q["item"] for q in quarantine) == Counter(i for i, _ in bad)
    for item, reason in bad:
        reasons = [q["reason"] for q in quarantine if q["item"] == item]
        assert any(reason in r for r in reasons), (item, reason, reasons)
    dup_keys = sorted(q["key"] for q in quarantine if q["item"] == "bad_dup")
    assert dup_keys == ["images/bad_dup.jpg", "images/bad_dup.png"]
    assert store.read_json(f"{OUT}/quarantine.json") == quarantine

    # Every good page is in the submission exactly once, and nothing else is.
    ids = _submission_ids(store.read_bytes(f"{OUT}/submission.csv"))
    assert sorted(ids) == good
    pages = sorted(k.removeprefix("pages/").removesuffix(".json")
                   for k in store.child(OUT).list("pages"))
    assert pages == good  # no bad page was ever read as a page

    # The DAG's own view agrees: the merge task's summary (its XCom) is the report's head,
    # and the shards split the good pages between them.
    merge = out["xcom"]["merge"]
    assert {k: merge[k] for k in ("pages_in", "recognized", "quarantined")} == {
        "pages_in": files_in, "recognized": len(good), "quarantined": len(bad)}
    assert merge["report"].endswith(f"{OUT}/report.json")
    shards = [out["xcom"][f"recognize[{i}]"] for i in range(2)]
    assert sorted(s["pages"] for s in shards) == [2, 2]
    assert sum(s["recognized"] for s in shards) == len(good)
    validation = out["xcom"]["validate"]
    assert (validation["items"], validation["passed"]) == (files_in, len(good))


def test_an_empty_collection_fails_the_run_loudly(tmp_path, run_dag):
    """Collection-level bad input: nothing to judge is an error, not an empty success."""
    store = open_store(tmp_path / "store")
    store.write_bytes("incoming/empty/notes/readme.txt", b"no images here\n")
    out = run_dag("kz_recognize", {"collection": "incoming/empty", "profile": "tiny",
                                   "model": "model", "shards": 2}, **_env(store))
    assert out["state"] == "failed"
    assert out["tasks"]["validate"] == "failed"
    assert out["tasks"]["merge"] != "success"
    assert not store.list("predictions")  # no report that looks like an empty result
