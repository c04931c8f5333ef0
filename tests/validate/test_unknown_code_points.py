"""A user's labels with a code point outside unicode_translation.csv: that row gets a clear
error and is quarantined, the rest of the batch goes on, and no class is made of it."""

from __future__ import annotations

from kzjobs.classify.dataset import vocabulary
from kzjobs.core.store import open_store
from kzjobs.data.dataset import Dataset
from kzjobs.data.format import Box, read_annotations, write_annotations
from kzjobs.synth import generate
from kzjobs.validate.job import ValidateJob

UNKNOWN = "U+1F600"  # a code point, but no class of the competition's table


def test_an_unknown_code_point_quarantines_its_row_and_the_rest_goes_on(tmp_path):
    store = open_store(tmp_path)
    generate(store.child("data"), books=1, pages_per_book=3, seed=3, fonts=["ipaex-mincho"])
    truth = read_annotations(store.read_bytes("data/train.csv"))
    bad = sorted(truth)[1]
    first = truth[bad][0]
    truth[bad] = [*truth[bad], Box(UNKNOWN, first.x, first.y, first.w, first.h)]
    store.write_bytes("data/train.csv", write_annotations(truth))
    assert UNKNOWN not in Dataset.open("data", store).vocabulary

    summary = ValidateJob(store_uri=str(tmp_path), profile_name="tiny", dataset="data",
                          out="checks").run()
    assert (summary["items"], summary["passed"], summary["quarantined"]) == (3, 2, 1)
    [entry] = store.read_json("checks/quarantine.json")
    assert entry["item"] == bad and entry["row"] == 1
    # The reason names the rule, the box and its code point.
    assert entry["reason"] == (f"code point not in the vocabulary "
                               f"(box {len(truth[bad]) - 1}: code={UNKNOWN})")
    assert store.read_json("checks/passed.json") == [i for i in sorted(truth) if i != bad]

    # Training makes no class of it: its box is left out, the page's others stay.
    ds = Dataset.open("data", store)
    classes = vocabulary(ds.annotations, ds.vocabulary)
    assert UNKNOWN not in classes and first.code in classes
    assert UNKNOWN in vocabulary(ds.annotations)  # without the table, every code is a class
