"""The bad-input corpus: every bad item is quarantined with its reason, every good one passes."""

from __future__ import annotations

from collections import Counter

import pytest

from kzjobs.validate.corpus import write_corpus
from kzjobs.validate.job import ValidateJob
from kzjobs.validate.suites import SUITES

KINDS = ("annotations", "batch", "predictions")


@pytest.fixture(scope="module", params=["local", "s3"])
def corpus_run(request, tmp_path_factory):
    """The corpus in a store (local, and S3 over moto's server), validated three ways.

    Module-scoped: the runs are shared by the tests below, which only read their outputs.
    """
    from kzjobs.core.store import open_store

    with pytest.MonkeyPatch.context() as mp:
        if request.param == "s3":
            import boto3

            for name, value in (
                ("AWS_ENDPOINT_URL", request.getfixturevalue("s3_endpoint")),
                ("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                ("AWS_DEFAULT_REGION", "us-east-1"),
            ):
                mp.setenv(name, value)
            boto3.client("s3").create_bucket(Bucket="kz-validate")
            store = open_store("s3://kz-validate/prefix")
        else:
            store = open_store(tmp_path_factory.mktemp("validate"))
        corpus = write_corpus(store.child("ds"))
        runs = {}
        for kind in KINDS:
            job = ValidateJob(
                store_uri=store.uri, profile_name="tiny", dataset="ds", kind=kind,
                predictions="ds/submission.csv", out=f"checks/{kind}",
            )
            summary = job.run()
            runs[kind] = {
                "summary": summary,
                "report": store.read_json(f"checks/{kind}/report.json"),
                "quarantine": store.read_json(f"checks/{kind}/quarantine.json"),
                "passed": store.read_json(f"checks/{kind}/passed.json"),
            }
    return corpus, runs


def test_corpus_has_at_least_15_kinds_of_bad_input(tmp_path):
    from kzjobs.core.store import open_store

    corpus = write_corpus(open_store(tmp_path))
    kinds = {reason for bad in corpus.bad.values() for _, reason in bad}
    assert len(kinds) >= 15, sorted(kinds)
    assert sum(len(bad) for bad in corpus.bad.values()) >= 30


@pytest.mark.parametrize("kind", KINDS)
def test_bad_items_quarantined_with_reason_good_items_pass(corpus_run, kind):
    corpus, runs = corpus_run
    run = runs[kind]
    quarantine, passed, report = run["quarantine"], run["passed"], run["report"]

    # Exactly the bad items are quarantined, duplicates once per copy.
    expected = corpus.bad[kind]
    assert Counter(q["item"] for q in quarantine) == Counter(i for i, _ in expected)
    for item, reason in expected:
        reasons = [q["reason"] for q in quarantine if q["item"] == item]
        assert any(reason in r for r in reasons), (item, reason, reasons)
    # ...and every good one passes, in input order for the CSV kinds.
    assert sorted(passed) == sorted(corpus.good[kind])
    if kind != "batch":
        assert passed == corpus.good[kind]

    # Counts reconcile, in the report and in the job's summary.
    assert report["items"] == report["passed"] + report["quarantined"]
    assert report["passed"] == len(passed) and report["quarantined"] == len(quarantine)
    assert report["success"] is False
    assert run["summary"]["quarantined"] == len(quarantine)
    for stats in report["expectations"]:
        assert stats["success"] == (stats["unexpected"] == 0)


def test_quarantine_names_the_row_or_key_and_the_box(corpus_run):
    _, runs = corpus_run
    by_item = {q["item"]: q for q in runs["annotations"]["quarantine"]}
    assert "box 0" in by_item["lb_offpage"]["reason"]
    assert "x2=" in by_item["lb_offpage"]["reason"] and "y2=" in by_item["lb_offpage"]["reason"]
    assert all(isinstance(q["row"], int) for q in runs["annotations"]["quarantine"])
    batch = {q["key"] for q in runs["batch"]["quarantine"]}
    assert {"images/bad_dup.jpg", "images/bad_dup.png"} <= batch


def test_every_expectation_of_every_suite_catches_something(corpus_run, tmp_path):
    """No dead expectation: each one fails on some item of the corpus, or (file size, the
    one limit the corpus cannot reach cheaply) when a profile lowers the limit."""
    _, runs = corpus_run
    fired = {
        (s["suite"], s["expectation"], tuple(s["columns"]))
        for run in runs.values() for s in run["report"]["expectations"] if s["unexpected"]
    }
    declared = {
        (f"{kind}.{table}", spec["type"], tuple(
            spec["kwargs"][k] for k in ("column", "column_A", "column_B") if k in spec["kwargs"]
        ))
        for kind, tables in SUITES.items() for table, specs in tables.items() for spec in specs
    }
    missing = declared - fired
    assert {(suite, columns) for suite, _, columns in missing} <= {
        ("annotations.pages", ("file_bytes",)), ("batch.pages", ("file_bytes",)),
    }, missing
