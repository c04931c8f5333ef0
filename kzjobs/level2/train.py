"""Train level 2 leave-one-fold-out on the classifiers' OOF predictions, and evaluate it.

The model of fold K is fit on the candidate rows of every other fold's books, and
predicts fold K's rows: those out-of-fold probabilities give the level-2 figures
next to the plain blend's (mean logit over kinds, top-1). No row of fold K takes
any part in fitting model K: there is no early stopping on the held-out fold.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from kzjobs.core.store import Store
from kzjobs.data.format import SEG_FP, Box
from kzjobs.level2.config import Level2Config
from kzjobs.level2.features import Vocabulary, box_f1, build, fit_threshold, winners
from kzjobs.level2.model import Level2Model, booster_proba, load_fold, per_kind, points, save_fold
from kzjobs.method.blend import blend
from kzjobs.method.predictions import KEY, box_folds, top_two

if TYPE_CHECKING:
    import lightgbm as lgb
    import xgboost as xgb

    from kzjobs.core.quarantine import Quarantined

log = logging.getLogger(__name__)


def fit_fold(X: np.ndarray, y: np.ndarray, names: list[str], cfg: Level2Config
             ) -> tuple[lgb.Booster, xgb.Booster]:
    """One LightGBM and one XGBoost binary model on ``(X, y)``, deterministic for a seed."""
    import lightgbm as lgb
    import xgboost as xgb

    lgb_params = {**cfg.lgb_params, "seed": cfg.seed, "num_threads": cfg.threads,
                  "deterministic": True, "verbose": -1}
    lgb_model = lgb.train(lgb_params, lgb.Dataset(X, y.astype(np.float32), feature_name=names,
                                                  free_raw_data=True),
                          num_boost_round=cfg.lgb_rounds)
    xgb_params = {**cfg.xgb_params, "seed": cfg.seed, "nthread": cfg.threads, "verbosity": 0}
    data = xgb.DMatrix(X, label=y.astype(np.float32), feature_names=names, missing=np.nan)
    xgb_model = xgb.train(xgb_params, data, num_boost_round=cfg.xgb_rounds)
    return lgb_model, xgb_model


@dataclass
class TrainResult:
    model: Level2Model
    boxes: pd.DataFrame  # per box: key, geometry, true, fold, code/prob (level 2), blend
    report: dict[str, Any]


def train(frames: Sequence[pd.DataFrame], truth: pd.DataFrame, cfg: Level2Config, *,
          kinds: Sequence[str] | None = None, vocab: Vocabulary | None = None,
          store: Store | None = None, prefix: str = "",
          pages: Mapping[str, Sequence[Box]] | None = None,
          quarantine: list[Quarantined] | None = None) -> TrainResult:
    """Fit level 2 on OOF prediction ``frames`` (every kind, every fold) and ``truth``.

    With ``store``, each fold's boosters are written under ``prefix`` as soon as they
    are fit, and a fold whose files exist is loaded instead of refit (a re-run after a
    crash does only the missing folds). With ``pages`` (ground-truth ``train.csv``
    boxes), the report has the competition F1 of level 2 and of the blend.
    """
    frames = [f for f in frames if not f.empty]
    kinds = tuple(kinds) if kinds is not None else tuple(
        sorted({k for f in frames for k in f["kind"].unique()}))
    frames = [f[f["kind"].isin(kinds)] for f in frames]
    fold_of = box_folds(frames)
    blended = per_kind(frames, quarantine=quarantine)
    # The dataset's vocabulary, when given, keeps the held-out fold's class set out too.
    vocab = vocab if vocab is not None else Vocabulary.from_frames(blended.values())
    cands = build(blended, kinds, vocab, cfg.top_n, truth, cfg.size_features)
    box_fold = cands.boxes.merge(fold_of, on=KEY, how="left")["fold"].to_numpy()
    cands.boxes["fold"] = box_fold
    row_fold = box_fold[cands.rows["box"].to_numpy()]
    folds = sorted(set(box_fold.tolist()))
    if len(folds) < 2:
        raise ValueError(f"leave-one-fold-out needs at least 2 folds, the OOF rows have {folds}")
    y = cands.rows["y"].to_numpy()

    oof_prob = np.zeros(len(y), np.float64)
    lgbs, xgbs, resumed = [], [], []
    for fold in folds:
        held = row_fold == fold
        pair = load_fold(store, prefix, fold) if store is not None else None
        if pair is None:
            log.info("level 2: fitting fold %d on %d rows", fold, int((~held).sum()))
            pair = fit_fold(cands.X[~held], y[~held], cands.names, cfg)
            if store is not None:
                save_fold(store, prefix, fold, *pair)
        else:
            resumed.append(fold)
        lgbs.append(pair[0])
        xgbs.append(pair[1])
        oof_prob[held] = booster_proba(*pair, cands.X[held], cands.names, cfg.lgb_weight)

    threshold = None
    if cfg.decision == "fitted":
        true = cands.boxes["true"].to_numpy(dtype=object)
        threshold, _ = fit_threshold(cands.boxes, cands.rows, oof_prob, true)
    model = Level2Model(kinds=kinds, top_n=cfg.top_n, vocab=vocab, folds=tuple(folds),
                        lgb=tuple(lgbs), xgb=tuple(xgbs), lgb_weight=cfg.lgb_weight,
                        fold_mode=cfg.fold_mode, threshold=threshold,
                        size_features=cfg.size_features)
    argmax = winners(cands.boxes, cands.rows, oof_prob)
    boxes = winners(cands.boxes, cands.rows, oof_prob, threshold)
    base = blend(frames)
    base_code, _, _ = top_two(base)
    boxes = boxes.merge(base[KEY].assign(blend=base_code), on=KEY, how="left")
    report = {
        "kinds": list(kinds), "folds": folds, "resumed_folds": resumed,
        "boxes": len(boxes), "rows": len(y), "positive_rate": float(y.mean()),
        "vocab_size": len(vocab),
        # the best any level-2 pick could do: the true class (or seg_fp) is a candidate
        "candidate_recall": float(_listed(cands).mean()),
        "threshold": threshold,
        "level2": _box_metrics(boxes["true"], boxes["code"]),
        "level2_argmax": _box_metrics(argmax["true"], argmax["code"]),
        "blend": _box_metrics(boxes["true"], boxes["blend"]),
        "by_fold": {
            str(f): {"level2": _box_metrics(part["true"], part["code"]),
                     "blend": _box_metrics(part["true"], part["blend"])}
            for f, part in boxes.groupby("fold")
        },
    }
    if pages is not None:
        from kzjobs.method.metric import score

        ids = set(boxes["image_id"])
        gt = {i: list(b) for i, b in pages.items() if i in ids}
        report["level2"]["f1"] = score(gt, points(boxes)).f1
        report["level2_argmax"]["f1"] = score(gt, points(argmax)).f1
        report["blend"]["f1"] = score(gt, points(boxes.assign(code=boxes["blend"]))).f1
    # The headline figures flat too: a bundle's metrics are its report's top-level numbers.
    for name in ("level2", "blend"):
        for metric in ("f1", "accuracy"):
            if metric in report[name]:
                report[f"{name}_oof_{metric}"] = report[name][metric]
    return TrainResult(model=model, boxes=boxes, report=report)


def _listed(cands: Any) -> np.ndarray:
    rows = cands.rows
    true = cands.boxes["true"].to_numpy(dtype=object)[rows["box"].to_numpy()]
    return rows.assign(hit=rows["cand"].to_numpy() == true).groupby("box")["hit"].any().to_numpy()


def _box_metrics(true: pd.Series, pred: pd.Series) -> dict[str, float]:
    """Box accuracy, box-level F1 (:func:`~kzjobs.level2.features.box_f1`), seg_fp rate."""
    true = true.to_numpy(dtype=object)
    pred = pred.to_numpy(dtype=object)
    return {
        "accuracy": float((true == pred).mean()) if len(true) else 0.0,
        "box_f1": box_f1(true, pred),
        "seg_fp_rate": float((pred == SEG_FP).mean()) if len(pred) else 0.0,
    }
