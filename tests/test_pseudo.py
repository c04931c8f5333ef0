"""Pseudolabels: the margin rule keeps the confident boxes, and they are right."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from kzjobs.data.format import BOX_CODES, SEG_FP, read_annotations, write_annotations
from kzjobs.level2.simulate import KindSpec, misread, simulate, unfamiliar_hand
from kzjobs.method.blend import blend
from kzjobs.method.config import PseudoConfig
from kzjobs.method.predictions import attach_truth, box_folds, truth_frame
from kzjobs.method.pseudo import calibrate, evaluate, labels, margins, select


@pytest.fixture(scope="module")
def sim():
    # One kind: each box has one model in the OOF, so margins are the simulated ones.
    return simulate(kinds=(KindSpec("a", acc_good=0.6, acc_bad=0.6),), books=4,
                    pages_per_book=4, easy=0.8, easy_error=0.005, seed=11)


def test_margin_rule_keeps_exactly_the_confident_boxes(sim):
    blended = blend(sim.oof())
    kept, threshold = select(blended, PseudoConfig())  # the seed's 5 and 10
    assert threshold == 5.0
    easy = blended.merge(sim.info, on=["image_id", "box_id"])["easy"].to_numpy()
    # easy boxes have margins of 6-10 logits, hard and merged ones at most 4
    assert (kept == easy).all()
    report = evaluate(attach_truth(blended, truth_frame(sim.boxes)), PseudoConfig())
    assert report["fraction_kept"] == pytest.approx(easy.mean())
    assert 0.7 < report["fraction_kept"] < 0.85
    assert report["accuracy_kept"] >= 0.99  # the seed: ~80% kept at >99% accuracy
    assert report["accuracy_all"] < report["accuracy_kept"] - 0.05
    assert report["seg_fp_kept"] > 0


def test_second_score_cap_and_seg_fp_switch(sim):
    blended = blend(sim.oof())
    capped, _ = select(blended, PseudoConfig(max_second=5.0))
    full, _ = select(blended, PseudoConfig())
    _, _, second = margins(blended)
    assert capped.sum() < full.sum() and not (capped & (second > 5.0)).any()
    winner = np.array([c[0] for c in blended["classes"]], dtype=object)
    no_fp, _ = select(blended, PseudoConfig(keep_seg_fp=False))
    assert not (no_fp & (winner == SEG_FP)).any()
    assert (no_fp == (full & (winner != SEG_FP))).all()


def test_quantile_rule_keeps_the_widest_margins(sim):
    blended = blend(sim.oof())
    kept, threshold = select(blended, PseudoConfig(rule="quantile", keep=0.6))
    assert kept.mean() == pytest.approx(0.6, abs=0.01)
    _, margin, _ = margins(blended)
    assert margin[kept].min() >= threshold >= margin[~kept].max()


def labelled(sim):
    oof = sim.oof()
    return attach_truth(blend(oof), truth_frame(sim.boxes)).merge(box_folds(oof))


def test_calibrated_rule_keeps_the_widest_set_that_meets_the_target():
    # weak models: the seed's 80% would be wrong often; calibration keeps fewer, right ones
    weak = simulate(kinds=(KindSpec("a", acc_good=0.3, acc_bad=0.3),), books=4,
                    pages_per_book=4, easy=0.4, easy_error=0.005, seed=4)
    known = labelled(weak)
    quantile = evaluate(known, PseudoConfig(rule="quantile"))
    assert quantile["accuracy_kept"] < 0.8
    threshold = calibrate(known, 0.97)
    kept, _ = select(known, PseudoConfig(rule="calibrated"), threshold=threshold)
    right = margins(known)[0] == known["true"].to_numpy(dtype=object)
    assert right[kept].mean() >= 0.97
    _, margin, _ = margins(known)
    wider = margin >= np.sort(margin[~kept])[-1]  # one more margin step lets errors in
    assert right[wider].mean() < 0.97
    # measured out of sample: each fold judged with the other fold's threshold
    report = evaluate(known, PseudoConfig(rule="calibrated", target_accuracy=0.97))
    assert report["threshold"] == threshold
    assert 0.3 < report["fraction_kept"] < 0.5 and report["accuracy_kept"] >= 0.95
    assert calibrate(known.iloc[:0], 0.99) == float("inf")
    with pytest.raises(ValueError, match="needs labelled OOF"):
        select(known, PseudoConfig(rule="calibrated"))


def test_labels_are_the_kept_winners_in_train_csv_format(sim):
    blended = blend(sim.oof())
    kept, _ = select(blended, PseudoConfig())
    pages = labels(blended, kept)
    parsed = read_annotations(write_annotations(pages), allow=BOX_CODES)
    assert sum(map(len, parsed.values())) == kept.sum()
    truth = {(i, (b.x, b.y, b.w, b.h)): b.code for i, boxes in sim.boxes.items() for b in boxes}
    right = [truth[(i, (b.x, b.y, b.w, b.h))] == b.code for i, bs in parsed.items() for b in bs]
    assert np.mean(right) >= 0.99
    assert any(b.code == SEG_FP for bs in parsed.values() for b in bs)


def write_frames(store, prefix, frames, name):
    for f in frames:
        kind, fold = f["kind"].iloc[0], int(f["fold"].iloc[0])
        buf = io.BytesIO()
        f.to_parquet(buf, index=False)
        store.write_bytes(f"{prefix}/{kind}/fold{fold}/{name}", buf.getvalue())


def write_run(store, run, train):
    """A training run as the pseudolabel job reads it: OOF predictions and their boxes."""
    write_frames(store, f"{run}/classify", train.oof(), "oof.parquet")
    for fold in range(2):
        pages = {i: b for i, b in train.boxes.items() if train.folds[i.split("_")[0]] == fold}
        store.write_bytes(f"{run}/detect/fold{fold}/oof.csv", write_annotations(pages))


def test_pseudo_command_on_an_incoming_collection(tmp_path):
    from kzjobs.cli import app
    from kzjobs.core.store import open_store

    kinds = (KindSpec("a", (0, 0.5), 0.8, 0.5), KindSpec("b", (0.5, 1), 0.8, 0.5, scale=1.3))
    train = simulate(kinds=kinds, books=4, pages_per_book=2, seed=1)
    incoming = simulate(kinds=kinds, books=2, pages_per_book=3, seed=2, book_prefix="t")
    store = open_store(tmp_path)
    write_run(store, "runs/r", train)
    write_frames(store, "incoming/c1/preds", incoming.frames, "preds.parquet")
    bad = incoming.frames[0].head(1).assign(box_id=999, logits=[np.array([np.nan] * 5)])
    buf = io.BytesIO()
    bad.to_parquet(buf, index=False)
    store.write_bytes("incoming/c1/preds/bad.parquet", buf.getvalue())
    store.write_bytes("incoming/c1/preds/cut.parquet", buf.getvalue()[:100])  # truncated

    args = ["pseudo", "--preds", "incoming/c1/preds", "--out", "runs/r/pseudo/c1.csv",
            "--run", "runs/r", "--store", str(tmp_path), "--profile", "tiny"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["models"] == 5 and report["kinds"] == ["a", "b"]
    assert report["rule"]["rule"] == "calibrated"  # the tiny profile's rule, at 95%
    assert report["quarantined"] == 2
    cut, nan = store.read_json(report["quarantine"])
    assert cut["item"].endswith("cut.parquet") and "not a readable parquet" in cut["reason"]
    assert nan["box_id"] == 999 and nan["reason"] == "non-finite logit"
    valid = report["validation"]
    assert valid["boxes"] == sum(map(len, train.boxes.values()))
    assert valid["threshold"] == pytest.approx(report["threshold"])
    assert valid["fraction_kept"] > 0.6
    assert valid["accuracy_kept"] >= 0.93 and valid["accuracy_kept"] > valid["accuracy_all"] + 0.03
    assert 0.6 < report["fraction_kept"] < 1.0

    # what was kept on the incoming pages is right, measured against their hidden truth
    pages = read_annotations(store.read_bytes("runs/r/pseudo/c1.csv"), allow=BOX_CODES)
    known = attach_truth(blend(incoming.frames), truth_frame(incoming.boxes))
    code = {(r.image_id, r.x, r.y, r.w, r.h): r.true for r in known.itertuples()}
    right = [code[(i, b.x, b.y, b.w, b.h)] == b.code for i, bs in pages.items() for b in bs]
    assert len(right) == report["kept"] and np.mean(right) >= 0.92
    assert store.read_json("runs/r/pseudo/c1.json") == report

    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and json.loads(again.stdout)["skipped"] is True

    # The same hand as the training's: the fitted seg_fp shift has (almost) nothing to do.
    shift = report["seg_fp_shift"]
    assert shift["rule"] == "fit" and shift["shift"] < 1.0
    assert shift["rates"]["incoming"] < shift["rates"]["oof"] + 0.03


def pseudo_with(tmp_path, name: str, **rule) -> tuple[dict, dict]:
    """The pseudo command on ``incoming/c/preds`` of the run ``runs/r`` in ``tmp_path``,
    tiny's profile with a margin rule and ``rule``: ``(report, kept labels)``."""
    from kzjobs.cli import app
    from kzjobs.core.profile import load_profile
    from kzjobs.core.store import open_store

    prof = load_profile("tiny").model_dump(mode="json")
    prof["pseudo"] |= {"rule": "margin", "min_margin": 2.0, "max_second": 99.0} | rule
    path = tmp_path / f"{name}.yaml"
    path.write_text(json.dumps(prof))
    out = f"runs/r/pseudo/{name}.csv"
    result = CliRunner().invoke(app, ["pseudo", "--preds", "incoming/c/preds", "--out", out,
                                      "--run", "runs/r", "--store", str(tmp_path),
                                      "--profile", str(path)])
    assert result.exit_code == 0, result.output
    kept = read_annotations(open_store(tmp_path).read_bytes(out), allow=BOX_CODES)
    return json.loads(result.stdout), kept


def test_pseudolabels_in_an_unfamiliar_hand_with_and_without_the_seg_fp_shift(tmp_path):
    """Read in a hand the models do not know, characters come out as sure seg_fp: kept
    as labels they would teach the models to drop that hand. The fitted shift sees the
    excess of seg_fp calls without labels and undoes it."""
    from kzjobs.core.store import open_store

    kinds = (KindSpec("a", acc_good=0.8, acc_bad=0.8),)
    train = simulate(kinds=kinds, books=4, pages_per_book=3, seed=21)
    new = simulate(kinds=kinds, books=2, pages_per_book=3, seed=22, book_prefix="t")
    store = open_store(tmp_path)
    write_run(store, "runs/r", train)
    write_frames(store, "incoming/c/preds",
                 [unfamiliar_hand(f, 0.3, seed=0) for f in new.frames], "preds.parquet")
    truth = {(i, b.x, b.y, b.w, b.h): b.code for i, bs in new.boxes.items() for b in bs}

    def pseudo(shift):
        report, kept = pseudo_with(tmp_path, f"shift-{shift}", seg_fp_shift=shift)
        dropped_chars = sum(b.code == SEG_FP and truth[(i, b.x, b.y, b.w, b.h)] != SEG_FP
                            for i, bs in kept.items() for b in bs)
        return report, dropped_chars

    plain, plain_dropped = pseudo(0)
    fitted, fitted_dropped = pseudo("fit")
    assert plain["seg_fp_shift"]["shift"] == 0.0
    rates = fitted["seg_fp_shift"]["rates"]
    assert rates["incoming"] > rates["oof"] + 0.15  # the unfamiliar hand, seen without labels
    assert rates["incoming_shifted"] < rates["oof"] + 0.01  # the OOF's, give or take chance
    assert 0.5 < fitted["seg_fp_shift"]["shift"] <= 3.5
    assert plain_dropped > 20 and fitted_dropped <= plain_dropped // 4


def test_class_shifts_undo_a_hands_misreading_before_pseudolabels_are_chosen(tmp_path):
    """A hand whose most common character the models read as another: kept as labels,
    those calls would teach the models the hand's misreading. Per-book class shifts,
    fitted without labels, give most of those boxes back their own class."""
    from kzjobs.core.store import open_store
    from kzjobs.method.shifts import class_shares

    kinds = (KindSpec("a", acc_good=0.9, acc_bad=0.9),)
    args = {"kinds": kinds, "n_classes": 30, "merged": 0.0, "noise": 0.0}
    train = simulate(books=4, pages_per_book=3, seed=21, **args)
    new = simulate(books=2, pages_per_book=6, seed=22, book_prefix="t", **args)
    shares = class_shares(blend(train.oof()))
    common, other = shares.index[0], shares.index[3]
    store = open_store(tmp_path)
    write_run(store, "runs/r", train)
    write_frames(store, "incoming/c/preds",
                 [misread(f, common, other, 0.8, seed=0) for f in new.frames], "preds.parquet")
    truth = {(i, b.x, b.y, b.w, b.h): b.code for i, bs in new.boxes.items() for b in bs}

    def right_on_common(kept):
        labels = [b.code for i, bs in kept.items() for b in bs
                  if truth[(i, b.x, b.y, b.w, b.h)] == common]
        return np.mean([c == common for c in labels]), len(labels)

    # Every box kept: the labels are the blend's calls, before and after the shifts.
    plain, plain_kept = pseudo_with(tmp_path, "plain", min_margin=0.0)
    fitted, fitted_kept = pseudo_with(tmp_path, "classes", min_margin=0.0, class_shift=True)
    assert plain["class_shift"] == {"books": {}, "winners_changed": 0}
    books = fitted["class_shift"]["books"]
    assert sorted(books) == ["ta", "tb"]
    assert all(b[other] < -0.5 for b in books.values())
    assert fitted["class_shift"]["winners_changed"] > 20
    (before, n), (after, n_after) = right_on_common(plain_kept), right_on_common(fitted_kept)
    assert n == n_after > 50 and before < 0.4 and after > 0.8, (before, after)
