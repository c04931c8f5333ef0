"""Write-once outputs: a merge publishes ``submission.csv``, the review index,
``quarantine.json`` and ``report.json`` once, on a local folder and on S3 (moto over HTTP).

A re-run over the same results changes nothing, a merge that crashed half-way is
completed, and a run whose results differ is refused, naming the prefix, without
touching what was published. Per-page results stay resumable work (overwritten freely).
"""

from __future__ import annotations

import pytest

from kzjobs.core.store import KeyExistsError
from kzjobs.recognize.job import MergeJob
from kzjobs.recognize.outputs import Char, PageResult, page_key

FINAL = ("submission.csv", "review/index.html", "quarantine.json", "report.json")


def _page(image_id: str, code: str) -> dict:
    return PageResult(image_id, 100, 200, [Char(code, 10, 10, 20, 20, 0.9),
                                           Char("U+3044", 10, 40, 20, 20, 0.8)]).to_json()


@pytest.fixture
def recognized(store):
    """A 3-page collection: two pages recognized, one quarantined by recognition."""
    for n in (1, 2, 3):
        store.write_bytes(f"coll/images/bk_00{n}.jpg", b"\xff\xd8 not read by the merge")
    store.write_json(f"out/{page_key('bk_001')}", _page("bk_001", "U+3042"))
    store.write_json(f"out/{page_key('bk_002')}", _page("bk_002", "U+3042"))
    store.write_json("out/quarantine/bk_003.json",
                     {"item": "bk_003", "reason": "cannot decode", "stage": "recognize"})
    return store


def merge(store, out: str = "out") -> dict:
    return MergeJob(store_uri=store.uri, collection="coll", out=out).run()


def published(store, out: str = "out") -> dict[str, bytes]:
    return {name: store.read_bytes(f"{out}/{name}") for name in FINAL}


def test_a_merge_publishes_once_and_a_rerun_over_the_same_results_is_a_no_op(recognized):
    store = recognized
    first = merge(store)
    assert (first["recognized"], first["quarantined"]) == (2, 1)
    before = published(store)
    assert merge(store) == first
    assert published(store) == before


def test_a_merge_that_crashed_half_way_is_completed_with_the_same_bytes(recognized):
    store = recognized
    merge(store)
    before = published(store)
    # The crash came after the submission: the rest (the report last) is missing.
    for name in FINAL[1:]:
        store.delete(f"out/{name}")
    merge(store)
    assert published(store) == before


def test_a_run_whose_outputs_differ_is_refused_and_nothing_is_overwritten(recognized):
    store = recognized
    merge(store)
    before = published(store)
    # Another model's reading of a page (or a page added to the collection since).
    store.write_json(f"out/{page_key('bk_002')}", _page("bk_002", "U+304B"))
    with pytest.raises(KeyExistsError, match=r"outputs already exist at .*out.*"
                                             r"choose a new out_prefix"):
        merge(store)
    assert published(store) == before
    # The same results under a new prefix publish as usual.
    for key in store.list("out/pages"):
        store.write_bytes(key.replace("out/", "out2/", 1), store.read_bytes(key))
    for key in store.list("out/quarantine"):
        store.write_bytes(key.replace("out/", "out2/", 1), store.read_bytes(key))
    assert merge(store, "out2")["recognized"] == 2
    assert published(store, "out2")["submission.csv"] != before["submission.csv"]


def test_a_half_published_prefix_with_other_outputs_is_refused_before_the_report(recognized):
    """A crashed merge left a submission; the re-run's results differ: it stops at the
    first file, so no report ever claims the old submission for the new results."""
    store = recognized
    merge(store)
    submission = store.read_bytes("out/submission.csv")
    for name in FINAL[1:]:
        store.delete(f"out/{name}")
    store.write_json(f"out/{page_key('bk_001')}", _page("bk_001", "U+304B"))
    with pytest.raises(KeyExistsError, match="choose a new out_prefix"):
        merge(store)
    assert store.read_bytes("out/submission.csv") == submission
    assert not store.exists("out/report.json")


def recognize(store, model: str, out: str = "out") -> dict:
    from kzjobs.recognize.job import RecognizeJob

    return RecognizeJob(store_uri=store.uri, collection="coll", out=out, model=model,
                        progress=False).run()


def test_a_prefix_read_with_one_model_refuses_another(recognized):
    """Every page is done, so a run with another model would read nothing and publish
    the first model's readings as its own: the prefix remembers its model instead."""
    store = recognized
    first = recognize(store, "runs/retrain/r1")  # no page to read: the bundle is not opened
    assert first["already_done"] == 3 and first["merge"]["recognized"] == 2
    assert store.read_json("out/model.json") == {"model": "runs/retrain/r1"}
    assert recognize(store, "runs/retrain/r1")["merge"] == first["merge"]  # a re-run
    before = published(store)
    with pytest.raises(KeyExistsError, match=r"read with runs/retrain/r1; this run reads "
                                             r"with runs/retrain/r2: choose a new out_prefix"):
        recognize(store, "runs/retrain/r2")
    assert published(store) == before


def test_an_alias_is_remembered_as_the_version_it_named(recognized):
    """``models:/kz-recognizer@champion`` names another model once promotion moves it."""
    from kzjobs.release.registry import client

    store = recognized
    c = client()
    c.create_registered_model("kz-recognizer")
    for _ in range(2):
        c.create_model_version("kz-recognizer", source="file:///nowhere")
    c.set_registered_model_alias("kz-recognizer", "champion", "1")
    recognize(store, "models:/kz-recognizer@champion")
    assert store.read_json("out/model.json") == {"model": "models:/kz-recognizer/1"}
    recognize(store, "models:/kz-recognizer/1")  # the same model, named by its version
    c.set_registered_model_alias("kz-recognizer", "champion", "2")
    with pytest.raises(KeyExistsError, match="read with models:/kz-recognizer/1; this run "
                                             "reads with models:/kz-recognizer/2"):
        recognize(store, "models:/kz-recognizer@champion")
    with pytest.raises(LookupError, match="no registered version"):
        recognize(store, "models:/kz-recognizer@nobody", out="out3")
    assert not store.exists("out3/model.json")
