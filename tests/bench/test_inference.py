"""bench.inference: each variant is a profile override read by the real recognizer."""

from __future__ import annotations

import pytest

from bench.inference import VARIANTS, read_with
from bench.shared import variant_profile
from bench.workload import write_seeded_bundle
from kzjobs.core.profile import Profile, load_profile
from kzjobs.core.store import open_store
from kzjobs.synth import generate


def test_a_variant_replaces_only_the_fields_it_names():
    base = load_profile("bench").model_dump(mode="json", by_alias=True)
    for overrides, _nchw in VARIANTS.values():
        merged = Profile.model_validate(variant_profile(base, overrides))  # each one is valid
        for section, fields in overrides.items():
            assert {k: getattr(getattr(merged, section), k) for k in fields} == {
                k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()}
    one_fold = variant_profile(base, VARIANTS["one fold"][0])
    assert one_fold["detect"] == base["detect"]
    assert one_fold["classify"] == base["classify"] | {"inference_folds": 1}


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    store = open_store(tmp_path_factory.mktemp("inference"))
    generate(store.child("heldout"), books=1, pages_per_book=2, seed=4, fonts=["ipaex-mincho"])
    write_seeded_bundle(store, "run", folds=2)
    return store


@pytest.mark.parametrize(("name", "classifiers"), [("as trained", 2), ("one fold", 1)])
def test_each_variant_reads_every_held_out_page_and_scores_it(store, name, classifiers):
    from kzjobs.data.dataset import Dataset

    heldout = Dataset.open("heldout", store)
    pages = [(i, heldout.read_image(i)) for i in heldout.image_ids()]
    result = read_with(store, "run", heldout, pages, name, *VARIANTS[name])
    assert result["classifiers"] == classifiers
    assert result["pages"] == 2
    assert 0.0 <= result["f1"] <= 1.0 and len(result["by_book"]) == 1  # one book
    assert set(result["seconds_per_page"]) == {"detect", "classify", "decide"}
    assert result["pages_per_second"] > 0


def test_a_layout_variant_reads_in_nchw_what_it_names_and_scores_the_same(store):
    """Layout is a speed knob only: the networks read NCHW instead of channels_last and
    find the same characters."""
    from kzjobs.data.dataset import Dataset

    heldout = Dataset.open("heldout", store)
    pages = [(i, heldout.read_image(i)) for i in heldout.image_ids()]
    base = read_with(store, "run", heldout, pages, "as trained", *VARIANTS["as trained"])
    for name, part in [("detector in NCHW layout", "detector"),
                       ("classifiers in NCHW layout", "classifiers")]:
        result = read_with(store, "run", heldout, pages, name, *VARIANTS[name])
        assert result["nchw"] == [part] and base["nchw"] == []
        # Random weights leave many near ties between a box's classes and seg_fp; which
        # of them the layout's rounding flips depends on the page (2-4% of boxes).
        assert result["characters"] == pytest.approx(base["characters"], rel=0.05)
        assert result["f1"] == pytest.approx(base["f1"], abs=0.01)
    assert base["characters"] > 50


def test_the_fastest_reading_counts_and_every_reading_is_kept():
    from bench.inference import fastest

    readings = [{"f1": 0.5, "pages_per_second": 1.1, "seconds_per_page": {"detect": 0.9}},
                {"f1": 0.5, "pages_per_second": 1.6, "seconds_per_page": {"detect": 0.6}}]
    best = fastest(readings)
    assert best["seconds_per_page"] == {"detect": 0.6} and best["pages_per_second"] == 1.6
    assert best["pages_per_second_readings"] == [1.1, 1.6]


def test_the_int8_variant_gives_the_bundle_its_trunks_and_reads_with_them(store):
    from bench.inference import with_int8_trunks
    from kzjobs.data.dataset import Dataset
    from kzjobs.release.bundle import Bundle

    with_int8_trunks(store, "run", "heldout")  # calibrated on these pages, for the test only
    trunks = Bundle.load(store.child("run")).int8_trunks
    assert len(trunks) == 2 and all(store.child("run").exists(p) for p in trunks.values())
    # Made once: a second call calibrates nothing (and the bundle's hashes still hold).
    import kzjobs.classify.quantize as quantize

    def again(*args, **kwargs):
        raise AssertionError("calibrated a bundle that has its trunks")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(quantize, "quantize_bundle", again)
        with_int8_trunks(store, "run", "heldout")
    heldout = Dataset.open("heldout", store)
    pages = [(i, heldout.read_image(i)) for i in heldout.image_ids()]
    name = "int8 classifier trunks"
    result = read_with(store, "run", heldout, pages, name, *VARIANTS[name])
    assert result["classifiers"] == 2 and result["pages"] == 2 and result["characters"] > 0
