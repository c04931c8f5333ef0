"""The blend: mean logits over models, joined by (image_id, box_id), k-th-logit fill."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from kzjobs.data.format import SEG_FP, UNKNOWN, Box
from kzjobs.level2.simulate import KindSpec, misread, simulate, unfamiliar_hand
from kzjobs.method.blend import blend
from kzjobs.method.predictions import (
    attach_truth,
    load_predictions,
    read_predictions,
    top_two,
    truth_frame,
)
from kzjobs.method.shifts import (
    class_shares,
    fit_class_shift,
    fit_seg_fp_shift,
    script_of,
    seg_fp_rate,
    shift_classes,
    shift_seg_fp,
)


def frame(rows, kind="k", fold=0):
    """rows: (image_id, box_id, classes, logits); every box at (0, 0, 10, 10) + box_id."""
    out = pd.DataFrame(
        [(i, b, b, 0, 10, 10, list(c), np.array(v, np.float32)) for i, b, c, v in rows],
        columns=["image_id", "box_id", "x", "y", "w", "h", "classes", "logits"],
    )
    return out.astype({c: np.int32 for c in ("box_id", "x", "y", "w", "h")}).assign(
        kind=kind, fold=fold)


def as_dict(blended):
    return {(r.image_id, r.box_id): dict(zip(r.classes, r.logits, strict=True))
            for r in blended.itertuples()}


def test_missing_class_takes_that_models_kth_logit():
    a = frame([("p_1", 0, ["A", "B", "C"], [10, 6, 2])])
    b = frame([("p_1", 0, ["B", "A", "D"], [9, 8, 1])], fold=1)
    out = blend([a, b])
    got = as_dict(out)[("p_1", 0)]
    # A=(10+8)/2, B=(6+9)/2, C=(2+b's k-th 1)/2, D=(a's k-th 2+1)/2
    assert got == pytest.approx({"A": 9.0, "B": 7.5, "C": 1.5, "D": 1.5})
    assert list(out["classes"][0][:2]) == ["A", "B"]  # best first
    assert out["n_models"][0] == 2
    assert list(blend([a, b], top_k=2)["classes"][0]) == ["A", "B"]


def test_a_box_missing_from_a_model_is_averaged_over_the_models_that_have_it():
    a = frame([("p_1", 0, ["A", "B"], [4, 2]), ("p_1", 1, ["C", "A"], [5, 1])])
    b = frame([("p_1", 0, ["A", "B"], [6, 0])], fold=1)
    out = blend([a, b]).set_index("box_id")
    assert out.loc[1, "n_models"] == 1
    assert out.loc[1, "logits"] == [5.0, 1.0]
    assert as_dict(blend([a, b]))[("p_1", 0)] == pytest.approx({"A": 5.0, "B": 1.0})


def test_blend_joins_by_key_so_row_order_does_not_matter():
    sim = simulate(kinds=(KindSpec("a"), KindSpec("b", scale=1.3)), books=2, pages_per_book=2,
                   boxes_per_page=30, seed=3)
    rng = np.random.default_rng(0)
    shuffled = [f.sample(frac=1.0, random_state=int(rng.integers(1 << 30)))
                for f in reversed(sim.frames)]
    assert any((s["box_id"].to_numpy() != f["box_id"].to_numpy()).any()
               for s, f in zip(shuffled, reversed(sim.frames), strict=True))
    one, two = blend(sim.frames), blend(shuffled)
    assert one[["image_id", "box_id", "x", "y", "w", "h", "n_models"]].equals(
        two[["image_id", "box_id", "x", "y", "w", "h", "n_models"]])
    d1, d2 = as_dict(one), as_dict(two)
    assert d1.keys() == d2.keys()
    assert all(d1[k] == pytest.approx(d2[k], abs=1e-5) for k in d1)
    assert len(one) == sum(len(p) for p in sim.boxes.values())


def test_blending_independent_models_beats_each_model():
    kinds = (KindSpec("a", acc_good=0.7, acc_bad=0.7), KindSpec("b", acc_good=0.7, acc_bad=0.7))
    sim = simulate(kinds=kinds, books=2, pages_per_book=3, easy=0.3, merged=0.0, seed=5)
    truth = truth_frame(sim.boxes)

    def accuracy(frames):
        known = attach_truth(blend(frames), truth)
        return float((top_two(known)[0] == known["true"].to_numpy(dtype=object)).mean())

    singles = [accuracy([f]) for f in sim.frames]
    assert accuracy(sim.frames) > max(singles) + 0.03, singles


def test_shifting_seg_fp_lowers_only_its_logit_and_resorts():
    a = frame([("p_1", 0, [SEG_FP, "A", "B"], [6, 5, 1]), ("p_1", 1, ["A", "B"], [4, 2])])
    out = as_dict(shift_seg_fp(a, 2.0))
    assert out[("p_1", 0)] == pytest.approx({"A": 5.0, SEG_FP: 4.0, "B": 1.0})
    assert list(shift_seg_fp(a, 2.0)["classes"][0]) == ["A", SEG_FP, "B"]
    assert out[("p_1", 1)] == {"A": 4.0, "B": 2.0}
    assert shift_seg_fp(a, 0.0) is a


def box_f1_of(blended, truth):
    from kzjobs.level2.features import box_f1

    known = attach_truth(blended, truth)
    return box_f1(known["true"].to_numpy(dtype=object), top_two(known)[0])


def test_a_fitted_shift_brings_back_the_characters_an_unfamiliar_hand_loses():
    kinds = (KindSpec("a", acc_good=0.8, acc_bad=0.8),)
    train = simulate(kinds=kinds, books=4, pages_per_book=3, seed=21)
    target = seg_fp_rate(blend(train.oof()), within=6.0)
    assert 0.0 < target < 0.02  # the noise marks the models are unsure of
    assert seg_fp_rate(blend(train.oof())) > target + 0.01  # and the ones they are sure of

    new = simulate(kinds=kinds, books=2, pages_per_book=3, seed=22, book_prefix="t")
    truth = truth_frame(new.boxes)
    plain = blend(new.frames)
    strange = blend([unfamiliar_hand(f, 0.3, seed=0) for f in new.frames])
    assert seg_fp_rate(strange, within=6.0) > target + 0.15

    shift = fit_seg_fp_shift(strange, target, max_shift=6.0)
    assert 0.5 < shift <= 3.5  # the unfamiliar leads are 0.5-3 (+ blend noise)
    fixed = shift_seg_fp(strange, shift)
    # the calls it was fitted on are down to the OOF rate, give or take chance
    assert seg_fp_rate(fixed, within=6.0 - shift) < target + 0.01
    # the sure calls (seals, marks) stay: the shift is fitted under them
    assert seg_fp_rate(fixed) > seg_fp_rate(plain) - target - 0.01
    assert box_f1_of(fixed, truth) > box_f1_of(strange, truth) + 0.1
    assert box_f1_of(fixed, truth) > box_f1_of(plain, truth) - 0.03

    # A collection the models read as they read their own books needs (almost) none.
    assert fit_seg_fp_shift(plain, target, max_shift=6.0) < 1.0
    # the window is the cap: unsure calls up to 2 logits, all but `allowed` of them undone
    assert 1.7 < fit_seg_fp_shift(strange, target, max_shift=2.0) <= 2.0
    assert fit_seg_fp_shift(strange, 1.0, max_shift=6.0) == 0.0


def test_a_fitted_class_shift_undoes_an_unfamiliar_hands_misreadings():
    kinds = (KindSpec("a", acc_good=0.9, acc_bad=0.9),)
    args = {"kinds": kinds, "n_classes": 30, "merged": 0.0, "noise": 0.0}
    train = simulate(books=4, pages_per_book=3, seed=21, **args)
    shares = class_shares(blend(train.oof()))
    assert shares.sum() == pytest.approx(1.0)  # one script here: every code is a kanji
    new = simulate(books=1, pages_per_book=6, seed=22, book_prefix="t", **args)
    truth = truth_frame(new.boxes)
    plain = blend(new.frames)
    common, other = shares.index[0], shares.index[3]
    strange = blend([misread(f, common, other, 0.8, seed=0) for f in new.frames])

    def accuracy(blended, code=None):
        known = attach_truth(blended, truth)
        right = top_two(known)[0] == known["true"].to_numpy(dtype=object)
        return float(right[known["true"].to_numpy() == code].mean() if code else right.mean())

    assert accuracy(strange, common) < 0.35 < accuracy(plain, common) - 0.5
    shift = fit_class_shift(strange, shares)
    # the hand's extra calls of `other` go back to `common`, second on those boxes
    assert shift[other] < -0.5 and shift[common] - shift[other] > 1.0
    assert max(map(abs, shift.values())) <= 3.0
    fixed = shift_classes(strange, shift)
    # most of the hand's misreadings are undone, at the cost of few other boxes
    assert accuracy(fixed, common) > 0.8
    assert accuracy(fixed) > accuracy(strange) + 0.03
    assert accuracy(fixed) > accuracy(plain) - 0.02
    # A book read as the models read their own books barely moves.
    calm = shift_classes(plain, fit_class_shift(plain, shares))
    assert (top_two(calm)[0] != top_two(plain)[0]).mean() < 0.02
    # Classes neither expected nor called min_expected times are never shifted.
    assert not fit_class_shift(strange, shares, min_expected=1e6)
    # A rare class the hand makes the models call far more often than expected is
    # pushed down, though it is too rare to be fitted for its own sake.
    rare = shares.index[-1]
    too_few = 3 * shares[rare] * len(strange)  # rare is expected under it, common over
    assert shares[common] * len(strange) > too_few
    confused = blend([misread(f, common, rare, 0.8, seed=0) for f in new.frames])
    shift = fit_class_shift(confused, shares, min_expected=too_few)
    assert shift[rare] < -0.5
    assert accuracy(shift_classes(confused, shift), common) > accuracy(confused, common) + 0.3


def test_class_shares_are_within_a_script():
    assert list(script_of(["U+3042", "U+30AB", "U+4E00", SEG_FP, "U+xyz"])) == [0, 0, 1, 1, 1]
    # a book with twice the kana reads the same shares
    rows = [("p_000", i, [c], [5.0]) for i, c in enumerate(
        ["U+3042"] * 4 + ["U+3044"] * 2 + ["U+4E00"] * 3 + [SEG_FP] * 5)]
    shares = class_shares(blend([frame(rows)]))
    assert shares.to_dict() == pytest.approx({"U+3042": 2 / 3, "U+3044": 1 / 3, "U+4E00": 1.0})


def test_bad_rows_are_quarantined_and_the_rest_goes_on():
    a = frame([
        ("p_1", 0, ["A", "B"], [3, 1]),
        ("p_1", 1, ["A", "B"], [3]),  # lists differ in length
        ("p_1", 2, ["A", "B"], [np.nan, 1]),  # non-finite
        ("p_1", 3, ["A", "A"], [3, 1]),  # a class twice
        ("p_1", 4, [], []),  # empty
        ("p_1", 5, ["A"], [1]), ("p_1", 5, ["B"], [1]),  # duplicate key
        ("p_1", 6, ["A", "B"], [1, 4]),  # unsorted: fixed, not quarantined
    ])
    b = frame([("p_1", 0, ["A", "B"], [3, 1]), ("p_1", 7, ["A"], [1])], fold=1)
    b.loc[b["box_id"] == 0, "x"] = 99  # the same key, another box: geometry clash
    quarantine = []
    out = blend([a, b], quarantine=quarantine)
    reasons = {(q.box_id, q.reason) for q in quarantine}
    assert reasons == {
        (1, "classes and logits differ in length"), (2, "non-finite logit"),
        (3, "a class listed twice"), (4, "empty top-k"),
        (5, "duplicate (image_id, box_id) in one file"),
        (0, "box geometry differs between models"),
    }
    assert out["box_id"].tolist() == [6, 7]
    assert out.set_index("box_id").loc[6, "classes"] == ["B", "A"]
    assert blend([], quarantine=quarantine).empty


def test_read_predictions_takes_kind_and_fold_from_file_metadata(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from kzjobs.core.store import open_store

    rows = frame([("p_1", 0, ["A", SEG_FP], [2, 1])]).drop(columns=["kind", "fold"])
    table = pa.Table.from_pandas(rows, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}),
                                           b"kind": b"resnet18", b"fold": b"3"})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    store = open_store(tmp_path)
    store.write_bytes("preds/resnet18/fold3.parquet", buf.getvalue())
    (got,) = load_predictions(store, ["preds"])
    assert got["kind"].tolist() == ["resnet18"] and got["fold"].tolist() == [3]
    assert list(got["classes"][0]) == ["A", SEG_FP]

    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(rows.drop(columns=["logits"])), buf)
    with pytest.raises(ValueError, match=r"bad.parquet: missing columns \['logits'\]"):
        read_predictions(buf.getvalue(), name="bad.parquet")
    with pytest.raises(ValueError, match="not a readable parquet"):
        read_predictions(b"nope", name="x")
    with pytest.raises(ValueError, match=r"no \.parquet"):
        load_predictions(store, ["elsewhere"])


def test_truth_joins_by_key_and_refuses_boxes_of_another_file():
    pages = {"p_1": [Box("U+3042", 0, 0, 10, 10), Box(SEG_FP, 1, 0, 10, 10)],
             "q_1": [Box(UNKNOWN, 0, 0, 5, 5)]}
    truth = truth_frame(pages)
    assert truth["true"].tolist() == ["U+3042", SEG_FP]  # unk carries no truth
    preds = frame([("p_1", 1, ["A"], [1]), ("p_1", 0, ["A"], [1])])
    joined = attach_truth(blend([preds]), truth)
    assert joined.set_index("box_id")["true"].to_dict() == {0: "U+3042", 1: SEG_FP}
    moved = preds.assign(x=preds["x"] + 5)
    with pytest.raises(ValueError, match="differ from their truth box"):
        attach_truth(blend([moved]), truth)
