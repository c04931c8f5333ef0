"""The whole system through Airflow on the embedded default, as ``make demo`` runs it:
kz_retrain -> kz_promote -> kz_recognize with the local launcher, on the tiny profile
cut to one or two epochs a stage. This test is about the wiring; that the tiny profile
learns is asserted by the tests of each job."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kzjobs.profile import load_profile
from kzjobs.settings import get_settings


@pytest.fixture
def short_profile(tmp_path: Path) -> str:
    """The tiny profile with the fewest epochs that still train every stage."""
    profile = load_profile("tiny").model_copy(update={"name": "tiny-short"}, deep=True)
    profile.detect.epochs = 2
    profile.classify.epochs = 2
    profile.classify.finetune_epochs = 1
    path = tmp_path / "tiny-short.yaml"
    path.write_text(yaml.safe_dump(profile.model_dump(mode="json", by_alias=True)))
    return str(path)


@pytest.mark.slow
def test_retrain_promote_recognize_through_airflow(short_profile: str):
    from kzjobs.data.format import read_submission
    from kzjobs.demo import demo, report
    from kzjobs.registry import get_version
    from kzjobs.store import open_store

    # Books cycle through the fonts: each fold trains and validates on both.
    fonts = ["kouzan-sousyo", "kouzan-sousyo", "kouzan-gyousyo", "kouzan-gyousyo"]
    out = demo(profile=short_profile, books=4, pages_per_book=2, heldout_books=2, incoming_books=1,
               shards=2, fonts=fonts)

    # kz_retrain registered its blend as the candidate, with its held-out figures as tags.
    version = out["registered"]["version"]
    assert version == 1
    tags = get_version(version).tags
    assert tags["profile"] == "tiny-short" and tags["heldout"] == "datasets/heldout"
    assert set(out["heldout_f1_by_book"]) == {
        k.removeprefix("f1.book.") for k in tags if k.startswith("f1.book.")}
    # The figure printed is the one the registry holds and promotion compares.
    assert float(tags["f1"]) == out["heldout_f1"]
    assert 0.0 <= out["heldout_detection_f1"] <= 1.0

    # The adaptation's seg_fp shift (tiny fits it on the incoming batch) is the bundle's.
    from kzjobs.bundle import Bundle
    from kzjobs.plan import PSEUDO_REPORT

    runs = open_store(get_settings().store_uri).child("runs/retrain")
    (report_key,) = [k for k in runs.list("") if k.endswith(PSEUDO_REPORT)]
    shift = runs.read_json(report_key)["seg_fp_shift"]
    assert shift["rule"] == "fit" and shift["rates"]["oof"] is not None
    run = runs.child(report_key.removesuffix("/" + PSEUDO_REPORT))
    assert Bundle.load(run).seg_fp_shift == shift["shift"]

    # kz_promote made the first version the champion, and said why.
    assert out["promotion"]["decision"] == "promoted"
    assert int(get_version("champion").version) == version

    # kz_recognize read every incoming page with the champion, in two shards, and merged.
    store = open_store(get_settings().store_uri)
    pages = {k.rsplit("/", 1)[-1].rsplit(".", 1)[0] for k in store.list("incoming/batch-1/images")}
    assert out["recognized"]["recognized"] + out["recognized"]["quarantined"] == len(pages)
    submission = read_submission(store.read_bytes("predictions/incoming-batch-1/submission.csv"))
    assert set(submission) == pages
    assert out["review"].endswith("review/index.html")

    # What a person reads at the end: every stage with its time, the figures, the places.
    text = report(out, 60.0)
    retrain = out["stages"]["kz_retrain"]
    assert {"detect_train[0]", "detect_train[1]", "level2", "evaluate", "register"} <= set(retrain)
    assert retrain["detect_train[0]"] > 0  # durations come from the task instances
    assert "recognize[1]" in out["stages"]["kz_recognize"]
    for dag_id in ("kz_retrain", "kz_promote", "kz_recognize"):
        assert dag_id in text
    assert f"held-out F1 (competition metric): {out['heldout_f1']:.3f}" in text
    assert f"detection only (boxes, any code): {out['heldout_detection_f1']:.3f}" in text
    assert f"(profile {out['profile']}, {out['train_pages']} training pages;" in text
    assert out["review"] in text and out["submission"] in text
    assert f"--backend-store-uri {get_settings().tracking_uri}" in text
