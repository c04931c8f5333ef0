"""Level-2 features: candidates, flags, fill, target, overlap and the vocabulary."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from kzjobs.data.format import SEG_FP
from kzjobs.level2.features import (
    NONE_ID,
    SEG_FP_ID,
    SIZE_FEATURES,
    UNKNOWN_ID,
    Vocabulary,
    box_f1,
    box_overlap,
    build,
    feature_names,
    fit_threshold,
    kana_marks,
    page_relative_size,
    winners,
)


def frame(rows):
    """rows: (image_id, box_id, (x, y, w, h), classes, logits)."""
    out = pd.DataFrame([(i, b, *g, list(c), np.array(v, np.float32)) for i, b, g, c, v in rows],
                       columns=["image_id", "box_id", "x", "y", "w", "h", "classes", "logits"])
    return out.astype({c: np.int32 for c in ("box_id", "x", "y", "w", "h")})


def test_box_overlap_is_the_largest_intersection_over_the_other_box():
    boxes = pd.DataFrame({
        "image_id": ["p_1"] * 4 + ["p_2"],
        "x": [0, 2, 100, 105, 2], "y": [0, 2, 0, 0, 2],
        "w": [10, 4, 10, 10, 4], "h": [10, 4, 10, 10, 4],
    })
    got = box_overlap(boxes)
    # A holds B whole: A sees 16/16; B sees 16/100. C and D share half: 50/100 each.
    # The box on p_2 sits where B is, but other pages do not count.
    assert got.tolist() == pytest.approx([1.0, 0.16, 0.5, 0.5, 0.0])


def test_box_sizes_are_relative_to_their_own_page_median():
    boxes = pd.DataFrame({
        "image_id": ["p_1", "p_1", "p_1", "p_2"],
        "w": [30, 30, 15, 8], "h": [40, 20, 40, 8],
    })
    got = np.exp(page_relative_size(boxes))
    # p_1's medians are 30 x 40; the lone box of p_2 is its own median.
    assert got.ravel().tolist() == pytest.approx([1.0, 1.0, 1.0, 0.5, 0.5, 1.0, 1.0, 1.0])


def test_small_kana_and_voicing_marks_are_known_from_unicode():
    codes = np.array(["U+3041", "U+3042", "U+3063", "U+30C3", "U+30F5", "U+30A2", "U+4E00",
                      SEG_FP, "U+ZZZZ", None], dtype=object)  # ぁ あ っ ッ ヵ ア 一
    small, voiced = kana_marks(codes).T
    assert small.tolist() == [True, False, True, True, True] + [False] * 5
    assert not voiced.any()
    voicing = ["U+304C", "U+3071", "U+30D0", "U+309E", "U+304B", "U+306F"]  # が ぱ バ ゞ か は
    assert kana_marks(np.array(voicing, dtype=object))[:, 1].tolist() == [True] * 4 + [False] * 2
    assert kana_marks(np.array([], dtype=object)).shape == (0, 2)


def test_vocabulary_encodes_codes_seg_fp_unknown_and_none():
    vocab = Vocabulary(["U+3042", "U+3041", SEG_FP, "U+3042"])
    assert vocab.codes == ("U+3041", "U+3042")
    got = vocab.encode(np.array(["U+3042", "U+3041", SEG_FP, "U+9999", None], dtype=object))
    assert got.tolist() == [1, 0, SEG_FP_ID, UNKNOWN_ID, NONE_ID]
    assert Vocabulary(list(vocab.codes)) == vocab


G = (0, 0, 10, 10)


def test_candidates_are_the_union_of_top_n_plus_seg_fp_with_flags_and_target():
    a = frame([("p_1", 0, G, ["A", "B", "C", "D"], [9, 5, 3, 1]),
               ("p_1", 1, (20, 0, 10, 10), ["A", SEG_FP, "B", "C"], [6, 5, 1, 0])])
    b = frame([("p_1", 0, G, ["B", "E", "A"], [8, 7, 2]),
               ("p_1", 1, (20, 0, 10, 10), ["C", "A", "B"], [4, 3, 2])])
    truth = pd.DataFrame({"image_id": ["p_1", "p_1"], "box_id": [0, 1], "true": ["E", "Z"]})
    vocab = Vocabulary("ABCDE")
    cands = build({"a": a, "b": b}, ["a", "b"], vocab, 2, truth)
    rows = cands.rows
    assert rows[rows["box"] == 0]["cand"].tolist() == ["A", "B", "E", SEG_FP]
    assert rows[rows["box"] == 1]["cand"].tolist() == ["A", "C", SEG_FP]
    # the true class when listed; seg_fp when it is not (Z is no candidate of box 1)
    assert rows[rows["y"]][["box", "cand"]].values.tolist() == [[0, "E"], [1, SEG_FP]]

    X = pd.DataFrame(cands.X, columns=cands.names)
    assert cands.names == feature_names(["a", "b"], 2) and X.shape == (7, len(cands.names))
    first = X.iloc[0]  # box 0, candidate A
    assert (first["a_top0_cls"], first["a_top1_cls"], first["cand"]) == (0, 1, 0)
    assert (first["a_top0_score"], first["b_top0_score"], first["b_top1_score"]) == (9, 8, 7)
    assert (first["a_top0_is_cand"], first["a_top1_is_cand"], first["b_top0_is_cand"]) == (1, 0, 0)
    # A is third in b's list (beyond top-2, still its logit); E is not in a's: a's k-th logit
    assert first["b_cand_score"] == 2 and X.iloc[2]["a_cand_score"] == 1
    assert X.iloc[2]["cand_mean_score"] == pytest.approx((1 + 7) / 2)
    assert X.iloc[3]["cand"] == SEG_FP_ID and X.iloc[4]["a_top1_cls"] == SEG_FP_ID
    assert X["box_overlap"].tolist() == [0.0] * 7
    assert not set(SIZE_FEATURES) & set(cands.names)


def test_size_features_give_each_row_its_box_size_and_whether_the_candidate_is_small():
    full, small = "U+3042", "U+3041"  # あ ぁ
    a = frame([("p_1", 0, (0, 0, 20, 20), [full, small], [5, 4]),
               ("p_1", 1, (0, 30, 20, 20), [full, small], [5, 4]),
               ("p_1", 2, (0, 60, 10, 12), [full, small], [5, 4.5])])
    cands = build({"a": a}, ["a"], Vocabulary([full, small]), 2, size_features=True)
    assert cands.names == feature_names(["a"], 2, size_features=True)
    assert cands.names[-4:] == SIZE_FEATURES
    X = pd.DataFrame(cands.X, columns=cands.names).assign(
        box=cands.rows["box"].to_numpy(), cand=cands.rows["cand"].to_numpy())
    last = X[X["box"] == 2].set_index("cand")
    assert np.exp(last.loc[small, ["box_log_w", "box_log_h"]]).tolist() == pytest.approx(
        [0.5, 0.6])
    assert last["cand_small"].to_dict() == {full: 0.0, small: 1.0, SEG_FP: 0.0}
    assert not X["cand_voiced"].any()
    assert np.exp(X.loc[X["box"] == 0, "box_log_w"]).tolist() == pytest.approx([1.0] * 3)


def test_a_kind_without_a_prediction_gives_nan_features_and_a_missing_kind_raises():
    a = frame([("p_1", 0, G, ["A", "B"], [9, 5]), ("p_1", 1, (20, 0, 10, 10), ["B"], [3])])
    b = frame([("p_1", 0, G, ["A", "B"], [8, 1])])
    cands = build({"a": a, "b": b}, ["a", "b"], Vocabulary("AB"), 2)
    X = pd.DataFrame(cands.X, columns=cands.names)[cands.rows["box"].to_numpy() == 1]
    assert X["b_top0_score"].isna().all() and X["b_cand_score"].isna().all()
    assert (X["b_top0_cls"] == NONE_ID).all() and (X["a_top1_cls"] == NONE_ID).all()
    assert not X["cand_mean_score"].isna().any()
    with pytest.raises(ValueError, match=r"kind\(s\) \['c'\]"):
        build({"a": a}, ["a", "c"], Vocabulary("AB"), 2)
    moved = b.assign(x=b["x"] + 1)
    with pytest.raises(ValueError, match="differ between kinds"):
        build({"a": a, "b": moved}, ["a", "b"], Vocabulary("AB"), 2)


def test_the_fitted_cut_keeps_characters_that_seg_fp_outranks_when_that_pays():
    # 100 boxes where level 2 finds seg_fp likelier (0.6) than the best character (0.35),
    # right half of the time; 20 false boxes (character 0.1, seg_fp 0.9).
    n_char, n_false = 100, 20
    char_p = [0.35] * n_char + [0.1] * n_false
    boxes = pd.DataFrame({"box_id": range(n_char + n_false)})
    rows = pd.DataFrame({"box": np.repeat(boxes.index.to_numpy(), 2),
                         "cand": ["U+3042", SEG_FP] * (n_char + n_false)})
    prob = np.array([p for c in char_p for p in (c, 1 - c - 0.05)])
    true = np.array(["U+3042", "U+3044"] * (n_char // 2) + [SEG_FP] * n_false, dtype=object)

    argmax = winners(boxes, rows, prob)["code"].to_numpy(dtype=object)
    assert (argmax == SEG_FP).all() and box_f1(true, argmax) == 0.0
    threshold, f1 = fit_threshold(boxes, rows, prob, true)
    assert 0.1 < threshold <= 0.35 and f1 == pytest.approx(0.5)  # 50 TP, 50 FP, 50 FN
    kept = winners(boxes, rows, prob, threshold)
    assert (kept["code"][:n_char] == "U+3042").all() and (kept["code"][n_char:] == SEG_FP).all()
    assert kept["prob"][:n_char].tolist() == pytest.approx([0.35] * n_char)
    # No threshold when none beats the plain argmax: every kept character would be wrong.
    assert fit_threshold(boxes, rows, prob, np.where(true == "U+3042", "U+3044", true)) == (
        None, 0.0)
