"""The ladder's arithmetic: each rung's F1 from its pages, its gain over the rung before it
with a bootstrap interval, and "no measurable gain" when that interval holds 0."""

from __future__ import annotations

import pandas as pd

from bench.shared import decided_f1, ladder_gains, reference_rung
from kzjobs.data.format import Box

A, B = "U+3042", "U+3044"
# 10 pages of 4 characters in two books.
TRUTH = {f"{'ab'[i % 2]}k_{i:02d}": [Box(A if j % 2 else B, 20 * j, 0, 10, 10) for j in range(4)]
         for i in range(10)}


def reading(right: dict[str, int]) -> pd.DataFrame:
    """Each page's first ``right[page]`` boxes read right, the others read as the wrong code
    (each wrong box: a false positive and a miss)."""
    rows = []
    for page, boxes in TRUTH.items():
        for j, box in enumerate(boxes):
            code = box.code if j < right[page] else (B if box.code == A else A)
            rows.append((page, box.x, box.y, box.w, box.h, code))
    return pd.DataFrame(rows, columns=["image_id", "x", "y", "w", "h", "code"])


def test_each_rung_is_judged_against_the_one_before_with_its_noise():
    everywhere = dict.fromkeys(TRUTH, 3)  # 3 of 4 right on every page: F1 0.75
    ladder = {
        "single k fold0": decided_f1(TRUTH, reading(dict.fromkeys(TRUTH, 2)), pages=True),
        "best single model": decided_f1(TRUTH, reading(dict.fromkeys(TRUTH, 2)), pages=True),
        "blend": decided_f1(TRUTH, reading(everywhere), pages=True),
        # one page more read right: 0.75 -> 0.775, one page of ten
        "+ level 2": decided_f1(TRUTH, reading(everywhere | {"ak_00": 4}), pages=True),
        "blend, seg_fp shifted": decided_f1(TRUTH, reading(everywhere), pages=True),
    }
    assert ladder["blend"]["f1"] == 0.75 and ladder["blend"]["pages"]["bk_01"] == [3, 1, 1]
    assert ladder["+ level 2"]["f1"] == 0.775
    assert ladder["+ level 2"]["by_book"] == {"ak": 0.8, "bk": 0.75}

    judged = ladder_gains(ladder)
    assert "gain" not in judged["single k fold0"] and "gain" not in judged["best single model"]
    assert all("pages" not in figures for figures in judged.values())
    blend = judged["blend"]["gain"]
    assert blend["vs"] == "best single model" and blend["gain"] == 0.25
    assert blend["interval"] == [0.25, 0.25] and blend["verdict"] == "gain"
    level2 = judged["+ level 2"]["gain"]
    assert level2["vs"] == "blend" and level2["gain"] == 0.025
    assert level2["interval"][0] == 0.0 and level2["verdict"] == "no measurable gain"
    shifted = judged["blend, seg_fp shifted"]["gain"]
    assert shifted["vs"] == "blend" and shifted["gain"] == 0.0
    assert shifted["verdict"] == "no measurable gain"


def test_the_reference_of_each_rung():
    ladder = dict.fromkeys(["single x fold0", "best single model", "blend",
                            "blend + pseudolabels", "+ level 2"])
    assert [reference_rung(r, ladder) for r in ladder] == [
        None, None, "best single model", "blend", "blend + pseudolabels"]
    del ladder["blend + pseudolabels"]
    assert reference_rung("+ level 2", ladder) == "blend"
    assert reference_rung("+ level 2, class shares matched", ladder) == "+ level 2"
