"""The recognition job over a real (untrained, seeded) blend: shards, resume, quarantine.

Learning is tested per stage and end to end in tests/dags/test_demo.py; here the
weights only need to be fixed, so that re-runs can be compared byte for byte.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from bench.workload import write_seeded_bundle
from kzjobs.core.store import open_store
from kzjobs.recognize.job import MergeJob, RecognizeJob, parse_shard
from kzjobs.synth import generate


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A store with a 3-page collection (one page corrupt) and a seeded bundle."""
    root = tmp_path_factory.mktemp("recognize")
    store = open_store(root)
    generate(store.child("coll"), books=1, pages_per_book=2, seed=3, fonts=["ipaex-mincho"],
             labelled=False)
    store.write_bytes("coll/images/synzA_009.jpg", b"\xff\xd8\xff\xe0 truncated")
    write_seeded_bundle(store, "model")
    return root, store


def run(root, out, **kw):
    return RecognizeJob(store_uri=str(root), profile_name="tiny", collection="coll", out=out,
                        progress=False, **{"model": "model", **kw}).run()


def outputs(store, out):
    """Every output but the ones that name their own location, or the model
    (``model.json``: runs compared here read with different bundles)."""
    return {k: store.read_bytes(k) for k in store.list(out)
            if "/review/" not in k and not k.endswith(("report.json", "/model.json"))}


def test_shards_resume_and_merge_identically(setup):
    root, store = setup
    whole = run(root, "out/whole")
    assert whole["merge"]["pages_in"] == 3
    assert whole["merge"]["recognized"] == 2 and whole["merge"]["quarantined"] == 1
    report = store.read_json("out/whole/report.json")
    assert report["quarantine"][0]["item"] == "synzA_009"
    assert "decode" in report["quarantine"][0]["reason"]
    assert whole["merge"]["characters"] > 0
    # Level 2 decides for a batch of pages at once (8 by default: both pages here); a
    # page's result does not depend on the pages it was read with.
    run(root, "out/one-by-one", batch=1)
    alone = {k.split("/", 2)[2]: v for k, v in outputs(store, "out/one-by-one").items()}
    assert alone == {k.split("/", 2)[2]: v for k, v in outputs(store, "out/whole").items()}

    # Two shards, the merge refusing until both are done.
    first = run(root, "out/sharded", shard="0/2")
    assert first["pages"] == 2 and "merge" not in first
    with pytest.raises(RuntimeError, match="no result yet"):
        MergeJob(store_uri=str(root), profile_name="tiny", collection="coll",
                 out="out/sharded").run()
    run(root, "out/sharded", shard="1/2")
    MergeJob(store_uri=str(root), profile_name="tiny", collection="coll",
             out="out/sharded").run()
    strip = len("out/sharded/")
    sharded = {k[strip:]: v for k, v in outputs(store, "out/sharded").items()}
    assert sharded == {k[len("out/whole/"):]: v for k, v in outputs(store, "out/whole").items()}

    # A crash after one page: the re-run reads only the missing page, same bytes.
    store.delete(store.list("out/whole/pages")[0])
    before = store.read_bytes("out/whole/submission.csv")
    again = run(root, "out/whole")
    assert (again["already_done"], again["recognized"]) == (2, 1)
    assert store.read_bytes("out/whole/submission.csv") == before


def test_cli_and_plain_image_folder(setup, tmp_path):
    root, store = setup
    folder = tmp_path / "scans"
    folder.mkdir()
    (folder / "p1.jpg").write_bytes(store.read_bytes(store.list("coll/images")[0]))
    from kzjobs.cli import app

    result = CliRunner().invoke(app, ["recognize", "--model", "model", "--images", str(folder),
                                      "--out", str(tmp_path / "out"), "--store", str(root),
                                      "--profile", "tiny"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["merge"]["recognized"] == 1
    assert (tmp_path / "out" / "transcripts" / "p1.txt").exists()
    assert (tmp_path / "out" / "review" / "p1.html").read_text().count("<rect") > 0


@pytest.mark.parametrize("where", [["--collection", "colll"], ["--images", "empty-folder"]])
def test_a_collection_with_no_pages_is_an_error_not_an_empty_submission(setup, tmp_path,
                                                                         where):
    root, _store = setup
    (tmp_path / "empty-folder").mkdir()
    if where[0] == "--images":
        where = ["--images", str(tmp_path / "empty-folder")]
    from kzjobs.cli import app

    result = CliRunner().invoke(app, ["recognize", "--model", "model", *where, "--out",
                                      str(tmp_path / "out"), "--store", str(root)])
    assert result.exit_code != 0
    assert "no page images in" in result.output + str(result.exception)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("bad", ["1", "2/2", "-1/3", "a/b"])
def test_bad_shard(bad):
    with pytest.raises(ValueError, match="shard"):
        parse_shard(bad)


def test_a_blend_recognizes_with_its_own_settings_unless_told(setup):
    """The bundle carries the profile it was trained and evaluated with (here the seeded
    blend's score threshold 0); ``--profile`` overrides it, as a user asked."""
    from kzjobs.core.profile import load_profile
    from kzjobs.recognize.recognizer import Recognizer
    from kzjobs.release.model_ref import open_bundle

    _root, store = setup
    bundle, bundle_root = open_bundle("model", store)
    own = Recognizer.from_bundle(bundle, bundle_root, device="cpu")
    assert own.profile.detect.score_threshold == 0.0
    assert own.profile.model_dump() == {**load_profile("tiny").model_dump(), "detect": {
        **load_profile("tiny").detect.model_dump(), "score_threshold": 0.0}}
    told = Recognizer.from_bundle(bundle, bundle_root, profile="demo", device="cpu")
    assert told.profile == load_profile("demo")
    assert own.detector.roi_heads.score_thresh == 0.0 != told.detector.roi_heads.score_thresh


def test_inference_folds_reads_pages_with_the_first_folds_of_each_kind(tmp_path):
    """``classify.inference_folds`` trades the fold blend for speed: N > 0 loads each
    kind's first N folds, 0 all of them."""
    import yaml

    from kzjobs.core.profile import load_profile
    from kzjobs.recognize.recognizer import Recognizer
    from kzjobs.release.model_ref import open_bundle

    store = open_store(tmp_path / "store")
    write_seeded_bundle(store, "model", folds=2)
    bundle, root = open_bundle("model", store)
    one_fold = load_profile("tiny").model_dump(mode="json", by_alias=True)
    one_fold["classify"]["inference_folds"] = 1
    (tmp_path / "one.yaml").write_text(yaml.safe_dump(one_fold))
    every = Recognizer.from_bundle(bundle, root, device="cpu")
    first = Recognizer.from_bundle(bundle, root, profile=str(tmp_path / "one.yaml"),
                                   device="cpu")
    assert [c.fold for c in every.classifiers] == [0, 1]
    assert [c.fold for c in first.classifiers] == [0]


def test_the_bundles_shifts_reach_every_classifiers_logits(setup):
    """The shifts the adaptation fitted reach the pages the recognizer reads: each
    classifier's seg_fp logit comes down by the seg_fp shift on every page, and the
    classes of a book's shifts move by them on that book's pages only."""
    import numpy as np

    from kzjobs.data.books import book_id
    from kzjobs.data.dataset import Dataset
    from kzjobs.data.format import SEG_FP
    from kzjobs.recognize.recognizer import Recognizer
    from kzjobs.release.model_ref import open_bundle

    _root, store = setup
    bundle, root = open_bundle("model", store)
    plain = Recognizer.from_bundle(bundle, root, device="cpu")
    coll = Dataset.open("coll", store)
    image_id = next(i for i in coll.image_ids() if i != "synzA_009")
    page = coll.read_image(image_id)
    boxes = plain.detect(page)
    assert boxes
    codes = sorted({c for f in plain.classify(image_id, page, boxes) for cs in f["classes"]
                    for c in cs} - {SEG_FP})
    book_shift = {codes[0]: 1.5, codes[1]: -0.75}
    for book, moved in ((book_id(image_id), book_shift), ("another", {})):
        shifted = Recognizer.from_bundle(bundle.model_copy(update={
            "seg_fp_shift": 2.5, "class_shifts": {book: book_shift}}), root, device="cpu")
        assert (plain.seg_fp_shift, shifted.seg_fp_shift) == (0.0, 2.5)
        seen = 0
        for a, b in zip(plain.classify(image_id, page, boxes),
                        shifted.classify(image_id, page, boxes), strict=True):
            for ca, la, cb, lb in zip(a["classes"], a["logits"], b["classes"], b["logits"],
                                      strict=True):
                before, after = dict(zip(ca, la, strict=True)), dict(zip(cb, lb, strict=True))
                assert before.keys() == after.keys()
                for code, logit in before.items():
                    want = logit - 2.5 if code == SEG_FP else logit + moved.get(code, 0.0)
                    assert np.isclose(after[code], want, atol=1e-5)
                seen += SEG_FP in before and codes[0] in before
        assert seen > 0


def _rebundled(store, prefix: str, **update) -> str:
    """The seeded blend again (same weights) under ``prefix``, its manifest updated."""
    from kzjobs.release.bundle import Bundle

    write_seeded_bundle(store, prefix)
    root = store.child(prefix)
    Bundle.load(root).model_copy(update=update).save(root)
    return prefix


def _codes(store, out) -> list[str]:
    return [c["code"] for k in store.list(f"{out}/pages")
            for c in store.read_json(k)["characters"]]


def test_recognition_adapts_to_a_new_book_as_a_bundle_with_its_shifts_would(setup):
    """A book the bundle has no shifts for: ``adapt`` fits them on its pages, against
    the shares the bundle's models call on their OOF pages, and reads the book exactly
    as a bundle carrying those shifts reads it; adapting again with that bundle fits
    them afresh (not on top). A re-run after losing a page re-reads only that page, keeps
    the saved shifts, and writes the same bytes; no frames stay."""
    from kzjobs.data.books import book_id

    root, store = setup
    run(root, "out/as-is")
    plain = _codes(store, "out/as-is")
    rare = min(("U+3042", "U+3044"), key=plain.count)  # the class the blend calls least
    assert plain.count(rare) < len(plain) / 2
    shares = {rare: 0.8, ({"U+3042", "U+3044"} - {rare}).pop(): 0.2}
    with pytest.raises(ValueError, match="no class shares"):
        run(root, "out/no-shares", adapt=True)

    adapted = run(root, "out/adapted", model=_rebundled(store, "with-shares",
                                                        class_shares=shares), adapt=True)
    assert adapted["merge"]["recognized"] == 2 and adapted["merge"]["quarantined"] == 1
    assert adapted["adaptation"]["books"] == 1
    shifts = store.read_json("out/adapted/" + adapted["adaptation"]["shifts"])
    (book, shift), = shifts.items()
    assert book == book_id(store.list("coll/images")[0].rsplit("/", 1)[-1][:-4])
    assert shift[rare] > 0
    assert _codes(store, "out/adapted").count(rare) > plain.count(rare)
    assert store.list("out/adapted/frames") == []
    report = store.read_json("out/adapted/report.json")
    assert report["adaptation"] == {adapted["adaptation"]["shifts"]: shifts}
    assert "adaptation" not in store.read_json("out/as-is/report.json")

    # The same as a bundle that carried the fitted shifts (from a retraining run).
    run(root, "out/carried", model=_rebundled(store, "with-shifts", class_shifts=shifts,
                                              class_shares=shares))
    strip = {"out/adapted/": len("out/adapted/"), "out/carried/": len("out/carried/")}
    carried = {k[strip["out/carried/"]:]: v for k, v in outputs(store, "out/carried").items()}
    assert {k[strip["out/adapted/"]:]: v for k, v in outputs(store, "out/adapted").items()
            if not k.startswith("out/adapted/adaptation/")} == carried
    refitted = run(root, "out/refitted", model="with-shifts", adapt=True)
    assert store.read_json("out/refitted/" + refitted["adaptation"]["shifts"]) == shifts

    # A crash that lost a page: only it is read again, with the saved shifts.
    store.delete(store.list("out/adapted/pages")[0])
    again = run(root, "out/adapted", model="with-shares", adapt=True)
    assert (again["already_done"], again["recognized"]) == (2, 1)
    assert {k[strip["out/adapted/"]:]: v for k, v in outputs(store, "out/adapted").items()
            if not k.startswith("out/adapted/adaptation/")} == carried
    assert store.list("out/adapted/frames") == []


def _pages(store, copies: int) -> list:
    from kzjobs.data.dataset import Dataset

    coll = Dataset.open("coll", store)
    read = [(i, coll.read_image(i)) for i in coll.image_ids() if i != "synzA_009"]
    return [(f"{i}-{n}", image) for n in range(copies) for i, image in read]


def test_pages_read_side_by_side_come_out_in_order_and_as_read_one_by_one(setup):
    """Worker threads share the models: each page's result is the one a single reader
    gives (at the same torch thread count), in the order given, and torch's thread count
    comes back afterwards."""
    import torch

    from kzjobs.core.device import torch_threads
    from kzjobs.recognize.recognizer import Recognizer
    from kzjobs.release.model_ref import open_bundle

    _root, store = setup
    bundle, root = open_bundle("model", store)
    recognizer = Recognizer.from_bundle(bundle, root, device="cpu")
    pages = _pages(store, copies=3)
    with torch_threads(1):
        alone = [r.to_json() for r, _ in recognizer.recognize_stream(pages, 2, workers=1)]
    before = torch.get_num_threads()
    side_by_side = list(recognizer.recognize_stream(iter(pages), 2, workers=3))
    assert torch.get_num_threads() == before
    assert [r.to_json() for r, _ in side_by_side] == alone
    assert [r.image_id for r, _ in side_by_side] == [i for i, _ in pages]
    assert all(image is page for (_, image), (_, page) in zip(side_by_side, pages, strict=True))
    assert sum(len(r["characters"]) for r in alone) > 0


def test_a_page_that_fails_in_a_worker_stops_the_stream_with_its_own_error(setup):
    """The error of a page read in a worker thread reaches the job, which stops there
    (finished pages are kept; a re-run reads the rest); the batches before it came out."""
    from kzjobs.recognize.recognizer import Recognizer
    from kzjobs.release.model_ref import open_bundle

    class FailsOnOnePage(Recognizer):
        def read_page(self, image_id, image):
            if image_id.endswith("-2"):
                raise RuntimeError(f"cannot read {image_id}")
            return super().read_page(image_id, image)

    _root, store = setup
    bundle, root = open_bundle("model", store)
    plain = Recognizer.from_bundle(bundle, root, device="cpu")
    failing = FailsOnOnePage(plain.profile, plain.detector, plain.classifiers, plain.level2,
                             plain.device)
    pages = _pages(store, copies=3)  # 6 pages; the 5th and 6th fail
    done = []
    with pytest.raises(RuntimeError, match=r"cannot read \S+-2"):
        for result, _ in failing.recognize_stream(pages, 2, workers=2):
            done.append(result.image_id)
    assert done == [i for i, _ in pages[:4]]


@pytest.mark.parametrize(("n", "want"), [(4, ["p0", "p3", "p6", "p9"]), (1, ["p0"]),
                                         (20, [f"p{i}" for i in range(10)])])
def test_a_books_shifts_are_fitted_on_pages_spread_through_it(n, want):
    from kzjobs.recognize.adapt import spread

    assert spread([f"p{i}" for i in range(10)], n) == want
