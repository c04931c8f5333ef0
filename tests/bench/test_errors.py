"""bench.errors: every true character is right, misread, not detected or dropped, and the
right ones are exactly the competition metric's true positives."""

from __future__ import annotations

import pandas as pd

from bench.errors import describe, reading_errors
from kzjobs.data.format import SEG_FP, Box, Point
from kzjobs.method.metric import score

A, II, U = "U+3042", "U+3044", "U+3046"  # あ い う


def kept(rows):
    """rows: (image_id, x, y, w, h, code): boxes whose centres the metric scores."""
    return pd.DataFrame(rows, columns=["image_id", "x", "y", "w", "h", "code"])


def test_each_true_character_is_right_misread_dropped_or_not_detected():
    truth = {
        "bk_001": [Box(A, 0, 0, 20, 20), Box(II, 0, 30, 20, 20), Box(A, 0, 60, 20, 20),
                   Box(U, 0, 90, 20, 20)],
        "bk_002": [Box(II, 0, 0, 20, 20)],
        "zz_001": [Box(A, 0, 0, 20, 20)],
    }
    decided = kept([
        ("bk_001", 2, 2, 16, 16, A),     # right
        ("bk_001", 2, 32, 16, 16, A),    # い read as あ
        ("bk_001", 200, 200, 10, 10, U),  # off every character: extra
        ("bk_002", 3, 3, 14, 14, U),     # い read as う
        ("zz_001", 1, 1, 18, 18, A),     # right
    ])
    # The detector found the third あ of bk_001 (dropped later), not its う.
    detected = {"bk_001": [Box(SEG_FP, 1, 61, 18, 18)], "bk_002": [], "zz_001": []}
    errors = reading_errors(truth, decided, detected)
    counts = {k: errors[k] for k in ("characters", "right", "misread", "not_detected",
                                     "dropped", "extra")}
    assert counts == {"characters": 6, "right": 2, "misread": 2, "not_detected": 1,
                      "dropped": 1, "extra": 1}
    assert errors["confusions"] == [{"true": "い", "read": "あ", "n": 1, "of": 2},
                                    {"true": "い", "read": "う", "n": 1, "of": 2}]
    bk = errors["by_book"]["bk"]
    assert (bk["characters"], bk["right"], bk["misread"], bk["extra"]) == (5, 1, 2, 1)
    assert errors["by_book"]["zz"]["right"] == 1 and errors["by_book"]["zz"]["confusions"] == []

    points = {i: [Point(r.code, r.x + r.w / 2, r.y + r.h / 2) for r in part.itertuples()]
              for i, part in decided.groupby("image_id")}
    metric = score(truth, points)
    assert errors["right"] == metric.tp
    assert errors["misread"] + errors["not_detected"] + errors["dropped"] == metric.fn
    assert errors["misread"] + errors["extra"] == metric.fp

    # Without the detector's boxes every miss is a miss of detection.
    blind = reading_errors(truth, decided)
    assert (blind["not_detected"], blind["dropped"]) == (2, 0)
    line = describe(errors).splitlines()[0]
    assert line.startswith("bk: 5 characters, 2 misread, 2 missed (1 not detected, 1 dropped)")
    assert "い->あ 1/2" in line


def test_a_page_without_kept_boxes_misses_all_and_an_unlabelled_one_is_all_extra():
    truth = {"bk_001": [Box(A, 0, 0, 20, 20)]}
    errors = reading_errors(truth, kept([("bk_009", 1, 1, 5, 5, A)]))
    assert (errors["not_detected"], errors["extra"], errors["right"]) == (1, 1, 0)
