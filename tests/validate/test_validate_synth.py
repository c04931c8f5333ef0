"""A synthetic dataset is valid: `kzjobs synth` then `kzjobs validate` reports no problem."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from kzjobs.cli import app
from kzjobs.core.store import open_store
from kzjobs.data.format import boxes_to_points, read_annotations, write_submission
from kzjobs.synth import generate


def test_synthetic_books_pass_every_suite(tmp_path):
    data = open_store(tmp_path / "d")
    generate(data, books=3, pages_per_book=4, seed=0)
    # The ground truth as a submission is a valid prediction file for the same pages.
    truth = read_annotations(data.read_bytes("train.csv"))
    data.write_bytes("submission.csv", write_submission(boxes_to_points(truth)))

    runner = CliRunner()
    store = str(tmp_path / "store")
    for kind, extra in (
        ("annotations", []),
        ("batch", []),
        ("predictions", ["--predictions", str(tmp_path / "d" / "submission.csv")]),
    ):
        result = runner.invoke(
            app, ["validate", kind, str(tmp_path / "d"), "--store", store, "-p", "tiny", *extra]
        )
        assert result.exit_code == 0, result.output
        summary = json.loads(result.stdout)
        assert summary["items"] == 12, summary
        assert summary["quarantined"] == 0 and summary["passed"] == 12, summary["reasons"]
        assert summary["success"] is True
        out = open_store(store).child(summary["out"])
        assert out.read_json("quarantine.json") == []
        assert sorted(out.read_json("passed.json")) == sorted(truth)
    assert summary["tables"]["points"] == sum(len(b) for b in truth.values())
