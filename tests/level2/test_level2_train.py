"""Level 2 learns what the blend cannot, leave-one-fold-out, in native model files."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from kzjobs.core.store import open_store
from kzjobs.data.format import SEG_FP, read_submission, write_annotations
from kzjobs.level2.config import Level2Config
from kzjobs.level2.features import Vocabulary
from kzjobs.level2.model import Level2Model, predict
from kzjobs.level2.simulate import KindSpec, codes, simulate
from kzjobs.level2.train import train
from kzjobs.method.blend import blend
from kzjobs.method.predictions import attach_truth, top_two, truth_frame

# Learnable noise: kind b is louder (its logits dominate a plain mean) and wrong more
# often on the first half of the classes, kind a on the second half; and boxes over
# two characters (seg_fp, box_overlap = 1) get a character from every kind.
KINDS = (KindSpec("a", good=(0.0, 0.5), acc_good=0.9, acc_bad=0.4),
         KindSpec("b", good=(0.5, 1.0), acc_good=0.9, acc_bad=0.4, scale=1.4))
CFG = Level2Config(lgb_rounds=30, xgb_rounds=30, threads=1)
N_CLASSES = 60
VOCAB = Vocabulary(codes(N_CLASSES))


def make(seed, **kw):
    args = {"kinds": KINDS, "books": 4, "pages_per_book": 3, "n_classes": N_CLASSES,
            "easy": 0.6, "merged": 0.12, "seed": seed}
    return simulate(**args | kw)


@pytest.fixture(scope="module")
def sim():
    return make(1)


@pytest.fixture(scope="module")
def trained(sim):
    return train(sim.oof(), truth_frame(sim.boxes), CFG, vocab=VOCAB, pages=sim.truth)


def accuracy(result, sim):
    """Box accuracy of level 2's non-seg_fp picks plus its seg_fp drops, on a page set."""
    truth = truth_frame(sim.boxes)
    got = truth.merge(result[["image_id", "box_id", "code"]], on=["image_id", "box_id"],
                      how="left").fillna({"code": SEG_FP})
    return float((got["code"] == got["true"]).mean())


def test_level2_beats_the_blended_top1_out_of_fold(trained):
    report = trained.report
    assert report["folds"] == [0, 1] and report["candidate_recall"] > 0.95
    l2, base = report["level2"], report["blend"]
    assert l2["accuracy"] > base["accuracy"] + 0.05, report
    assert l2["f1"] > base["f1"] + 0.03, report  # the competition F1 on the GT pages
    assert (report["level2_oof_f1"], report["blend_oof_accuracy"]) == (l2["f1"], base["accuracy"])
    assert l2["box_f1"] > base["box_f1"] + 0.03
    for fold in report["by_fold"].values():
        assert fold["level2"]["accuracy"] > fold["blend"]["accuracy"]
    # it learnt the merged boxes: most are dropped, and few true characters are
    boxes = trained.boxes
    chars = boxes[boxes["true"] != SEG_FP]
    assert (chars["code"] == chars["true"]).mean() > (chars["blend"] == chars["true"]).mean() + 0.01
    assert (boxes.loc[boxes["true"] == SEG_FP, "code"] == SEG_FP).mean() > 0.8
    assert (boxes.loc[boxes["true"] != SEG_FP, "code"] == SEG_FP).mean() < 0.05


def test_the_decision_rule_is_reported_and_saved_with_the_model(sim, trained, tmp_path):
    report = trained.report
    assert report["level2"]["box_f1"] >= report["level2_argmax"]["box_f1"]
    argmax = train(sim.oof(), truth_frame(sim.boxes), CFG.model_copy(update={"decision": "argmax"}),
                   vocab=VOCAB, pages=sim.truth)
    assert argmax.model.threshold is None and argmax.report["level2"] == report["level2_argmax"]
    store = open_store(tmp_path)
    for name, result in (("fitted", trained), ("argmax", argmax)):
        result.model.save(store, name)
        loaded = Level2Model.load(store, name)
        assert loaded.threshold == result.model.threshold
        assert store.read_json(f"{name}/meta.json")["threshold"] == result.model.threshold


def test_leave_one_fold_out_uses_no_row_of_the_held_out_fold(sim, trained):
    # Scramble everything of fold 0 (predictions and truth); model 0 must not change,
    # model 1 (trained on fold 0) must.
    rng = np.random.default_rng(0)
    frames = []
    for f in sim.oof():
        f = f.copy()
        if int(f["fold"].iloc[0]) == 0:
            f["classes"] = [list(rng.permutation(c)) for c in f["classes"]]
            f["logits"] = [np.sort(rng.normal(5, 3, len(v)))[::-1].astype(np.float32)
                           for v in f["logits"]]
        frames.append(f)
    truth = truth_frame(sim.boxes)
    held = truth["image_id"].str.split("_").str[0].map(sim.folds) == 0
    truth.loc[held, "true"] = rng.permutation(truth.loc[held, "true"].to_numpy())
    other = train(frames, truth, CFG, vocab=VOCAB)
    X = np.random.default_rng(1).normal(0, 5, size=(500, len(trained.model.features)))
    X = X.astype(np.float32)
    assert np.array_equal(trained.model.predict_proba(X, folds=[0]),
                          other.model.predict_proba(X, folds=[0]))
    assert not np.array_equal(trained.model.predict_proba(X, folds=[1]),
                              other.model.predict_proba(X, folds=[1]))


def small_and_full_kana(seed: int, books: int = 4, pages: int = 4) -> tuple[list, pd.DataFrame]:
    """OOF frames of pages where half the boxes are あ or its small ぁ, which the kinds
    read as a coin toss between the two; only the box's size tells them apart. The other
    boxes, い, are read right."""
    rng = np.random.default_rng(seed)
    full, small, other = "U+3042", "U+3041", "U+3044"
    frames, truth = [], []
    for b in range(books):
        for p in range(pages):
            image_id = f"k{chr(97 + b)}_{p:03d}"
            for box in range(40):
                code = other if box % 2 else rng.choice([full, small])
                side = 16 if code == small else 28
                side += int(rng.integers(-2, 3))
                geometry = (100, 40 * box, side, side)
                truth.append((image_id, box, *geometry, code))
                for kind in ("a", "b"):
                    pair = [full, small] if rng.random() < 0.5 else [small, full]
                    classes = [other, full, small] if code == other else [*pair, other]
                    logits = [8.0, 2.0, 1.0] if code == other else [5.0, 4.8, 1.0]
                    frames.append((image_id, box, *geometry, classes,
                                   np.array(logits, np.float32), kind, b % 2))
    columns = ["image_id", "box_id", "x", "y", "w", "h", "classes", "logits", "kind", "fold"]
    oof = pd.DataFrame(frames, columns=columns).astype(
        {c: np.int32 for c in ("box_id", "x", "y", "w", "h")})
    truth = pd.DataFrame(truth, columns=["image_id", "box_id", "x", "y", "w", "h", "true"])
    return [part for _, part in oof.groupby(["kind", "fold"])], truth


def test_size_features_tell_small_kana_from_full_ones_out_of_fold():
    frames, truth = small_and_full_kana(3)
    vocab = Vocabulary(["U+3041", "U+3042", "U+3044"])
    pair = truth["true"] != "U+3044"
    results = {}
    for size_features in (False, True):
        cfg = CFG.model_copy(update={"size_features": size_features})
        result = train(frames, truth, cfg, vocab=vocab)
        got = truth.merge(result.boxes[["image_id", "box_id", "code"]], on=["image_id", "box_id"])
        results[size_features] = float((got["code"] == got["true"])[pair.to_numpy()].mean())
    # Without the box's size level 2 can only guess; with it, it reads nearly all of them.
    assert results[False] < 0.7 and results[True] > 0.95, results


def test_native_model_files_round_trip_to_identical_predictions(sim, trained, tmp_path):
    store = open_store(tmp_path)
    trained.model.save(store, "m")
    assert sorted(store.list("m")) == [
        "m/fold0/lgb.txt", "m/fold0/xgb.ubj", "m/fold1/lgb.txt", "m/fold1/xgb.ubj",
        "m/meta.json", "m/vocab.json"]
    assert store.read_text("m/fold0/lgb.txt").startswith("tree\n")  # LightGBM's text format
    assert store.read_bytes("m/fold0/xgb.ubj")[:1] == b"{"  # UBJSON object
    assert store.read_json("m/vocab.json") == list(VOCAB.codes)
    loaded = Level2Model.load(store, "m")
    assert loaded.features == trained.model.features and loaded.vocab == VOCAB
    incoming = make(7, books=1, pages_per_book=2, book_prefix="t").frames
    before, after = predict(incoming, trained.model), predict(incoming, loaded)
    assert before.equals(after) and len(before) > 0

    store.delete("m/fold1/xgb.ubj")
    with pytest.raises(ValueError, match="fold 1 are missing"):
        Level2Model.load(store, "m")
    with pytest.raises(ValueError, match="no level-2 model"):
        Level2Model.load(store, "elsewhere")


def test_predict_on_incoming_pages_per_fold_and_mean(trained):
    new = make(5, books=2, pages_per_book=2, book_prefix="t")
    truth = truth_frame(new.boxes)
    known = attach_truth(blend(new.frames), truth)
    base = top_two(known)[0]
    base_acc = float((base == known["true"].to_numpy(dtype=object)).mean())
    per_fold = predict(new.frames, trained.model)
    assert trained.model.fold_mode == "per_fold"
    assert SEG_FP not in set(per_fold["code"]) and per_fold["prob"].between(0, 1).all()
    assert per_fold[["image_id", "box_id"]].equals(
        per_fold[["image_id", "box_id"]].sort_values(["image_id", "box_id"]))
    assert accuracy(per_fold, new) > base_acc + 0.04

    trained.model.fold_mode = "mean"
    try:
        mean = predict(new.frames, trained.model)
    finally:
        trained.model.fold_mode = "per_fold"
    assert accuracy(mean, new) > base_acc + 0.04
    # shuffled rows and file order: the same answer (joined by key)
    shuffled = [f.sample(frac=1.0, random_state=3) for f in reversed(new.frames)]
    assert predict(shuffled, trained.model).equals(per_fold)
    full = predict(new.frames, trained.model, drop_seg_fp=False)
    assert len(full) == len(truth) and (full["code"] == SEG_FP).sum() == len(full) - len(per_fold)
    # page by page (as recognize may batch them): each page's answer as in the whole set
    pages = [predict([f[f["image_id"] == page] for f in new.frames], trained.model)
             for page in sorted(per_fold["image_id"].unique())]
    pd.testing.assert_frame_equal(pd.concat(pages, ignore_index=True), per_fold)


def test_predict_quarantines_bad_rows_and_goes_on(trained):
    new = make(6, books=1, pages_per_book=1, book_prefix="t")
    frames = [f.copy() for f in new.frames]
    frames[0].at[0, "logits"] = np.array([np.nan] * 5, np.float32)
    quarantine = []
    got = predict(frames, trained.model, drop_seg_fp=False, quarantine=quarantine)
    assert [q.reason for q in quarantine] == ["non-finite logit"]
    assert len(got) == len(new.boxes["ta_000"])  # the box still has the other models
    with pytest.raises(ValueError, match=r"kind\(s\) \['b'\]"):
        predict([f for f in frames if f["kind"].iloc[0] == "a"], trained.model)
    assert predict([], trained.model).empty


def write_run(store, sim, run="runs/r"):
    for f in sim.oof():
        buf = io.BytesIO()
        f.to_parquet(buf, index=False)
        store.write_bytes(f"{run}/classify/{f['kind'].iloc[0]}/fold{f['fold'].iloc[0]}/"
                          "oof.parquet", buf.getvalue())
    for fold in sorted(set(sim.folds.values())):
        pages = {i: b for i, b in sim.boxes.items() if sim.folds[i.split("_")[0]] == fold}
        store.write_bytes(f"{run}/detect/fold{fold}/oof.csv", write_annotations(pages))
    store.write_bytes("ds/train.csv", write_annotations(sim.truth))


def test_train_and_predict_commands_resume_and_write_a_submission(sim, tmp_path):
    from kzjobs.cli import app
    from kzjobs.method.metric import score

    store = open_store(tmp_path)
    write_run(store, sim)
    args = ["level2", "train", "--run", "runs/r", "--dataset", "ds",
            "--store", str(tmp_path), "--profile", "tiny"]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0, first.output
    report = json.loads(first.stdout)
    assert report["model"] == "runs/r/level2" and report["resumed_folds"] == []
    assert report["level2"]["f1"] > report["blend"]["f1"] + 0.03
    oof = pd.read_parquet(io.BytesIO(store.read_bytes("runs/r/level2/oof.parquet")))
    assert len(oof) == report["boxes"]
    assert CliRunner().invoke(app, args).stdout.count('"skipped": true') == 1

    # a crash after fold 0: the re-run fits fold 1 only, and gets the same model
    lgb0 = store.read_text("runs/r/level2/fold0/lgb.txt")
    for key in ("meta.json", "report.json", "fold1/lgb.txt", "fold1/xgb.ubj"):
        store.delete(f"runs/r/level2/{key}")
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    resumed = json.loads(again.stdout)
    assert resumed["resumed_folds"] == [0] and resumed["level2"] == report["level2"]
    assert store.read_text("runs/r/level2/fold0/lgb.txt") == lgb0

    new = make(8, books=1, pages_per_book=2, book_prefix="t")
    for f in new.frames:
        buf = io.BytesIO()
        f.to_parquet(buf, index=False)
        store.write_bytes(f"incoming/c/{f['kind'].iloc[0]}_{f['fold'].iloc[0]}.parquet",
                          buf.getvalue())
    out = CliRunner().invoke(app, [
        "level2", "predict", "--model", "runs/r/level2", "--preds", "incoming/c",
        "--out", "out/c.parquet", "--submission", "out/c.csv", "--store", str(tmp_path)])
    assert out.exit_code == 0, out.output
    summary = json.loads(out.stdout)
    assert summary["boxes"] == sum(map(len, new.boxes.values())) and summary["pages"] == 2
    submission = read_submission(store.read_bytes("out/c.csv"))
    assert sum(map(len, submission.values())) == summary["kept"]
    assert score(new.truth, submission).f1 > 0.9
