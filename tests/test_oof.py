"""Joining per-fold out-of-fold box files for the classifiers."""

from __future__ import annotations

import pytest

from kzjobs.data.format import SEG_FP, Box, read_annotations, write_annotations
from kzjobs.method.oof import MergeBoxesJob


def test_merge_keeps_every_page_once_and_refuses_overlaps(tmp_path):
    job = MergeBoxesJob(store_uri=str(tmp_path), profile_name="tiny",
                        inputs=["f0/oof.csv", "f1/oof.csv"], out="oof.csv")
    a = {"sa_001": [Box("U+3042", 1, 2, 3, 4), Box(SEG_FP, 5, 6, 7, 8)]}
    b = {"sb_001": [Box("U+3044", 9, 9, 9, 9)], "sb_002": []}
    job.store.write_bytes("f0/oof.csv", write_annotations(a))
    job.store.write_bytes("f1/oof.csv", write_annotations(b))
    assert job.run() == {"out": "oof.csv", "inputs": 2, "pages": 3, "boxes": 3}
    assert read_annotations(job.store.read_bytes("oof.csv"), allow=(SEG_FP,)) == a | b

    job.store.write_bytes("f1/oof.csv", write_annotations(a))
    with pytest.raises(ValueError, match="sa_001"):
        job.run()
