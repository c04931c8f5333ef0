"""Whole-input failures, profile limits, and the ``kzjobs validate`` command."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from kzjobs.cli import app
from kzjobs.core.store import open_store
from kzjobs.data.format import Box, write_annotations, write_translation
from kzjobs.validate.corpus import UNUSABLE_CSVS, VOCABULARY, page_jpeg, write_corpus
from kzjobs.validate.facts import UnusableInput
from kzjobs.validate.job import ValidateJob


def _dataset(root) -> None:
    store = open_store(root)
    store.write_bytes("unicode_translation.csv", write_translation(VOCABULARY))
    store.write_bytes("images/aa_001.jpg", page_jpeg())
    store.write_bytes("train.csv", write_annotations({"aa_001": [Box("U+3042", 5, 5, 20, 20)]}))


@pytest.mark.parametrize("name", sorted(UNUSABLE_CSVS))
def test_unusable_csv_fails_the_job_and_writes_no_report(tmp_path, name):
    _dataset(tmp_path / "ds")
    (tmp_path / "bad.csv").write_bytes(UNUSABLE_CSVS[name])
    (tmp_path / "ds" / "train.csv").write_bytes(UNUSABLE_CSVS[name])
    for kind, extra in (("annotations", {}), ("predictions", {"predictions": "bad.csv"})):
        job = ValidateJob(store_uri=str(tmp_path), dataset="ds", kind=kind, out="v", **extra)
        with pytest.raises(UnusableInput):
            job.run()
        assert not job.store.exists("v/report.json")


@pytest.mark.parametrize(
    ("kind", "breakage", "message"),
    [
        ("annotations", "no train.csv", "no train.csv"),
        ("annotations", "vocabulary not UTF-8", "not UTF-8"),
        ("annotations", "bad code in vocabulary", "bad code point"),
        ("batch", "no images", "no files under images"),
        ("predictions", "no vocabulary", "vocabulary"),
        ("predictions", "no such predictions file", "no such file"),
    ],
)
def test_missing_or_broken_companion_files_are_unusable(tmp_path, kind, breakage, message):
    _dataset(tmp_path / "ds")
    ds = tmp_path / "ds"
    (tmp_path / "sub.csv").write_text("image_id,labels\naa_001,U+3042 10 10\n")
    if breakage == "no train.csv":
        (ds / "train.csv").unlink()
    elif breakage == "vocabulary not UTF-8":
        (ds / "unicode_translation.csv").write_bytes("Unicode,char\nU+3042,あ\n".encode("cp932"))
    elif breakage == "bad code in vocabulary":
        (ds / "unicode_translation.csv").write_text("Unicode,char\nX+3042,あ\n")
    elif breakage == "no images":
        (ds / "images" / "aa_001.jpg").unlink()
    elif breakage == "no vocabulary":
        (ds / "unicode_translation.csv").unlink()
    predictions = "missing.csv" if breakage == "no such predictions file" else "sub.csv"
    job = ValidateJob(store_uri=str(tmp_path), dataset="ds", kind=kind, predictions=predictions)
    with pytest.raises(UnusableInput, match=message):
        job.run()


def test_a_predictions_vocabulary_can_be_given_apart(tmp_path):
    _dataset(tmp_path / "ds")
    (tmp_path / "ds" / "unicode_translation.csv").rename(tmp_path / "vocab.csv")
    (tmp_path / "sub.csv").write_text("image_id,labels\naa_001,U+3042 10 10 U+3099 10 10\n")
    job = ValidateJob(store_uri=str(tmp_path), dataset="ds", kind="predictions",
                      predictions="sub.csv", vocabulary="vocab.csv", out="v")
    assert job.run()["quarantined"] == 1
    [entry] = job.store.read_json("v/quarantine.json")
    assert "not in the vocabulary" in entry["reason"] and "U+3099" in entry["reason"]


def test_profile_limits_are_used(tmp_path):
    """Limits come from the profile's `validate` section, not from constants."""
    store = open_store(tmp_path / "ds")
    small, big = page_jpeg((96, 96)), page_jpeg((600, 800), seed=3)
    store.write_bytes("images/aa_small.jpg", small)
    store.write_bytes("images/aa_big.jpg", big)
    store.write_bytes("images/aa_cmyk.jpg", page_jpeg((96, 96), mode="CMYK"))
    assert len(small) < 2 * len(small) < len(big)
    (tmp_path / "profiles").mkdir()
    profile = tmp_path / "profiles" / "limits.yaml"
    profile.write_text(
        f"validate:\n  max_file_bytes: {2 * len(small)}\n  modes: [RGB, L]\n"
    )

    def run(profile_name: str, out: str) -> dict:
        job = ValidateJob(store_uri=str(tmp_path), profile_name=profile_name, dataset="ds",
                          kind="batch", out=out)
        job.run()
        return {q["item"]: q["reason"] for q in job.store.read_json(f"{out}/quarantine.json")}

    assert run("tiny", "v/tiny") == {}  # the default modes are all the decoder reads
    limited = run(str(profile), "v/limits")
    assert set(limited) == {"aa_big", "aa_cmyk"}
    assert "file too large" in limited["aa_big"]
    assert "unsupported image mode" in limited["aa_cmyk"] and "CMYK" in limited["aa_cmyk"]


def test_cli_exit_codes_and_summary(tmp_path):
    write_corpus(open_store(tmp_path / "ds"))
    runner = CliRunner()
    store = str(tmp_path / "store")
    result = runner.invoke(app, ["validate", "batch", str(tmp_path / "ds"), "--store", store,
                                 "-p", "tiny", "--out", "v/batch"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["quarantined"] > 0 and summary["passed"] > 0
    assert open_store(store).exists("v/batch/report.json")

    (tmp_path / "ds" / "submission.csv").write_bytes(UNUSABLE_CSVS["not UTF-8 (Shift_JIS)"])
    result = runner.invoke(app, ["validate", "predictions", str(tmp_path / "ds"),
                                 "--predictions", str(tmp_path / "ds" / "submission.csv"),
                                 "--store", store, "-p", "tiny"])
    assert result.exit_code == 2
    assert "unusable input" in result.stderr and "not UTF-8" in result.stderr
    assert result.stdout == ""


def test_a_batch_of_pdf_tiff_and_manifest_pages_is_judged_page_by_page(tmp_path):
    """One item per page of a PDF and of a multi-page TIFF, one per canvas; a canvas whose
    image is at a private address is refused without a connection, the rest pass."""
    from tests.data.sources import encoded, manifest_v3, page, pdf, tiff

    ds = tmp_path / "ds"
    ds.mkdir()
    (ds / "book one.pdf").write_bytes(pdf(2))
    (ds / "scroll.tif").write_bytes(tiff([page(), page(shade=90), page(shade=180)]))
    (ds / "源氏物語_001.png").write_bytes(encoded(page(mode="LA"), "PNG"))
    manifest = manifest_v3("https://203.0.113.9", "bk", [("a", 240, 360)])
    manifest["items"][0]["items"][0]["items"][0]["body"]["service"][0]["id"] = (
        "https://10.0.0.1/iiif/a")
    (ds / "bk.json").write_text(json.dumps(manifest))
    job = ValidateJob(store_uri=str(tmp_path), profile_name="tiny", dataset=str(ds),
                      kind="batch", out="v")
    summary = job.run()
    assert (summary["items"], summary["passed"], summary["quarantined"]) == (7, 6, 1)
    assert job.store.read_json("v/passed.json") == [
        "book_one_p0001", "book_one_p0002", "scroll_p0001", "scroll_p0002", "scroll_p0003",
        "源氏物語_001"]
    [entry] = job.store.read_json("v/quarantine.json")
    assert entry["item"] == "bk_p0001" and "resolves to 10.0.0.1" in entry["reason"]


def test_predictions_for_pdf_pages_are_checked_against_the_rendered_page_size(tmp_path):
    """A PDF page's size is its size at KZ_PDF_DPI (300): 240x360 pt -> 1000x1500 px."""
    from tests.data.sources import pdf

    ds = tmp_path / "ds"
    ds.mkdir()
    (ds / "book.pdf").write_bytes(pdf(2))
    (ds / "unicode_translation.csv").write_bytes(write_translation(VOCABULARY))
    (tmp_path / "sub.csv").write_text("image_id,labels\nbook_p0001,U+3042 990 1490\n"
                                      "book_p0002,U+3042 1010 20\nbook_p0003,U+3042 1 1\n")
    job = ValidateJob(store_uri=str(tmp_path), dataset=str(ds), kind="predictions",
                      predictions=str(tmp_path / "sub.csv"), out="v")
    summary = job.run()
    assert (summary["passed"], summary["quarantined"]) == (1, 2)
    reasons = {q["item"]: q["reason"] for q in job.store.read_json("v/quarantine.json")}
    assert "point outside the page" in reasons["book_p0002"]
    assert "unknown image id" in reasons["book_p0003"]
