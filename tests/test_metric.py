"""The competition F1 on hand-worked cases."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from kzjobs.data.format import Box, Point, boxes_to_points, write_annotations, write_submission
from kzjobs.method.metric import score, score_page

A, B = "U+3042", "U+3044"


def test_perfect_submission_scores_one():
    truth = {
        "p_1": [Box(A, 0, 0, 10, 10), Box(B, 20, 0, 10, 10)],
        "q_1": [Box(A, 5, 5, 3, 3)],
    }
    result = score(truth, boxes_to_points(truth))
    assert (result.tp, result.fp, result.fn, result.f1) == (3, 0, 0, 1.0)


def test_empty_page_with_and_without_predictions():
    assert score_page([], []) .__dict__ == {"tp": 0, "fp": 0, "fn": 0}
    assert score_page([], [Point(A, 1, 1)]).fp == 1
    assert score_page([Box(A, 0, 0, 4, 4)], []).fn == 1


def test_duplicate_predictions_count_once_then_as_false_positives():
    counts = score_page([Box(A, 0, 0, 10, 10)], [Point(A, 5, 5)] * 3)
    assert (counts.tp, counts.fp, counts.fn) == (1, 2, 0)


@pytest.mark.parametrize(("x", "y"), [(0, 5), (10, 5), (5, 0), (5, 10)])
def test_point_on_the_border_is_not_inside(x, y):
    counts = score_page([Box(A, 0, 0, 10, 10)], [Point(A, x, y)])
    assert (counts.tp, counts.fp, counts.fn) == (0, 1, 1)


def test_wrong_code_is_a_miss_and_a_false_positive_but_detection_counts_it():
    truth, preds = [Box(A, 0, 0, 10, 10)], [Point(B, 5, 5)]
    assert score_page(truth, preds).__dict__ == {"tp": 0, "fp": 1, "fn": 1}
    assert score_page(truth, preds, ignore_code=True).__dict__ == {"tp": 1, "fp": 0, "fn": 0}


def test_overlapping_boxes_same_code_take_first_unused_in_order():
    # Both points lie inside both boxes. Box 1 takes the first point, box 2 the second.
    truth = [Box(A, 0, 0, 10, 10), Box(A, 2, 2, 10, 10)]
    assert score_page(truth, [Point(A, 5, 5), Point(A, 6, 6)]).tp == 2
    # One point only: the first listed box takes it, the second misses.
    counts = score_page(truth, [Point(A, 5, 5)])
    assert (counts.tp, counts.fp, counts.fn) == (1, 0, 1)


def test_greedy_order_matters_exactly_as_the_competition():
    # Box 1 (large) takes the first matching point in prediction order even though
    # box 2 could only use that one: the competition's greedy rule, not optimal matching.
    truth = [Box(A, 0, 0, 20, 20), Box(A, 0, 0, 6, 6)]
    counts = score_page(truth, [Point(A, 3, 3), Point(A, 15, 15)])
    assert (counts.tp, counts.fp, counts.fn) == (1, 1, 1)


def test_page_missing_from_submission_counts_misses_and_extra_page_false_positives():
    truth = {"a_1": [Box(A, 0, 0, 10, 10)], "a_2": [Box(A, 0, 0, 10, 10), Box(B, 0, 0, 5, 5)]}
    preds = {"a_1": [Point(A, 5, 5)], "zz_9": [Point(A, 1, 1)]}
    result = score(truth, preds)
    assert (result.tp, result.fp, result.fn) == (1, 1, 2)
    assert result.f1 == pytest.approx(2 / (2 + 1 + 2))


def test_counts_summed_over_pages_before_f1_and_by_book():
    truth = {"aa_1": [Box(A, 0, 0, 10, 10)], "bb_1": [Box(A, 0, 0, 10, 10)] * 3}
    preds = {"aa_1": [Point(A, 5, 5)], "bb_1": [Point(B, 5, 5)]}
    result = score(truth, preds)
    assert (result.tp, result.fp, result.fn) == (1, 1, 3)
    assert result.f1 == pytest.approx(2 * 1 / (2 * 1 + 1 + 3))  # not the mean of page F1s
    assert result.by_book["aa"].f1 == 1.0
    assert result.by_book["bb"].f1 == 0.0


def test_score_cli_prints_json(tmp_path):
    from kzjobs.cli import app

    truth = {"aa_1": [Box(A, 0, 0, 10, 10)], "bb_1": [Box(B, 0, 0, 10, 10)]}
    (tmp_path / "train.csv").write_bytes(write_annotations(truth))
    preds = {"aa_1": [Point(A, 5, 5)], "bb_1": [Point(A, 5, 5)]}
    (tmp_path / "sub.csv").write_bytes(write_submission(preds))
    args = ["score", str(tmp_path / "train.csv"), str(tmp_path / "sub.csv")]
    out = json.loads(CliRunner().invoke(app, [*args, "--by-book"]).stdout)
    assert (out["tp"], out["fp"], out["fn"]) == (1, 1, 1)
    assert out["by_book"]["aa"]["f1"] == 1.0
    det = json.loads(CliRunner().invoke(app, [*args, "--detection"]).stdout)
    assert det["f1"] == 1.0 and "by_book" not in det


def test_a_gain_on_every_page_is_a_gain_and_a_gain_on_one_page_is_not_measurable():
    from kzjobs.method.metric import Counts, f1_gain

    # 20 pages of 10 characters; the base reads 8 of each right (F1 0.8).
    base = {f"b_{i:02d}": Counts(tp=8, fp=2, fn=2) for i in range(20)}
    better = {p: Counts(tp=9, fp=1, fn=1) for p in base}  # every page: 0.9
    gain = f1_gain(base, better)
    assert gain["gain"] == 0.1 and gain["interval"] == [0.1, 0.1]
    assert gain["verdict"] == "gain" and gain["pages"] == 20
    assert f1_gain(better, base)["verdict"] == "loss"

    # One page read perfectly, the others as before: F1 0.8 -> 0.81, within the noise.
    lucky = base | {"b_00": Counts(tp=10)}
    gain = f1_gain(base, lucky)
    assert gain["gain"] == round(2 * 162 / (2 * 162 + 38 + 38) - 0.8, 4)
    low, high = gain["interval"]
    assert low == 0.0 < gain["gain"] < high and gain["verdict"] == "no measurable gain"
    assert f1_gain(base, lucky) == gain  # seeded: the same draws every time
    # A page only one reading has counts as empty in the other.
    assert f1_gain({}, {"x_1": Counts(tp=1)})["gain"] == 0.0
    with pytest.raises(ValueError, match="at least one page"):
        f1_gain({}, {})
