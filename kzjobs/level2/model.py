"""The trained level 2: one LightGBM and one XGBoost booster per held-out fold.

Saved in the boosters' native formats under a prefix of the store, never pickles::

    <prefix>/vocab.json          class codes, in feature-integer order
    <prefix>/fold{K}/lgb.txt     LightGBM text model (trained without fold K)
    <prefix>/fold{K}/xgb.ubj     XGBoost UBJSON model (trained without fold K)
    <prefix>/meta.json           kinds, top_n, features, folds, blend weight, threshold,
                                 size features (written last)

:func:`predict` is what the recognizer calls: per-kind prediction frames in, one
winning code and its probability per box out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from kzjobs.core.keys import Level2Keys
from kzjobs.core.store import Store
from kzjobs.data.format import SEG_FP, Point
from kzjobs.level2.features import (
    Candidates,
    Vocabulary,
    build,
    feature_names,
    winners,
)
from kzjobs.method.blend import blend
from kzjobs.method.predictions import GEOMETRY, KEY

if TYPE_CHECKING:
    import lightgbm as lgb
    import xgboost as xgb

    from kzjobs.core.quarantine import Quarantined

FORMAT = 1


def save_fold(store: Store, prefix: str, fold: int, lgb_model: lgb.Booster,
              xgb_model: xgb.Booster) -> None:
    store.write_text(Level2Keys(prefix).lightgbm(fold), lgb_model.model_to_string())
    store.write_bytes(Level2Keys(prefix).xgboost(fold), bytes(xgb_model.save_raw("ubj")))


def load_fold(store: Store, prefix: str, fold: int) -> tuple[lgb.Booster, xgb.Booster] | None:
    """A fold's two boosters, or None when either file is missing (not trained yet)."""
    import lightgbm as lgb
    import xgboost as xgb

    lgb_key, xgb_key = Level2Keys(prefix).lightgbm(fold), Level2Keys(prefix).xgboost(fold)
    if not (store.exists(lgb_key) and store.exists(xgb_key)):
        return None
    xgb_model = xgb.Booster()
    xgb_model.load_model(bytearray(store.read_bytes(xgb_key)))
    return lgb.Booster(model_str=store.read_text(lgb_key)), xgb_model


def booster_proba(lgb_model: lgb.Booster, xgb_model: xgb.Booster, X: np.ndarray,
                  names: list[str], lgb_weight: float) -> np.ndarray:
    """One fold's blended probability: ``lgb_weight`` * LightGBM + the rest * XGBoost."""
    import xgboost as xgb

    out = np.zeros(len(X), np.float64)
    if lgb_weight > 0:
        out += lgb_weight * lgb_model.predict(X)
    if lgb_weight < 1:
        data = xgb.DMatrix(X, feature_names=names, missing=np.nan)
        out += (1 - lgb_weight) * xgb_model.predict(data)
    return out


@dataclass
class Level2Model:
    kinds: tuple[str, ...]
    top_n: int
    vocab: Vocabulary
    folds: tuple[int, ...]
    lgb: tuple[lgb.Booster, ...]
    xgb: tuple[xgb.Booster, ...]
    lgb_weight: float = 0.5
    fold_mode: str = "per_fold"
    threshold: float | None = None  # a character is kept from here on (None: argmax)
    size_features: bool = False  # with the box-size features (features.SIZE_FEATURES)

    @property
    def features(self) -> list[str]:
        return feature_names(self.kinds, self.top_n, self.size_features)

    def candidates(self, per_kind: dict[str, pd.DataFrame]) -> Candidates:
        """The candidate rows of blended per-kind frames, with this model's features."""
        return build(per_kind, self.kinds, self.vocab, self.top_n, size_features=self.size_features)

    def predict_proba(self, X: np.ndarray, *, folds: Sequence[int] | None = None) -> np.ndarray:
        """The blended probability of each row, averaged over the fold models (or ``folds``)."""
        chosen = [i for i, f in enumerate(self.folds) if folds is None or f in folds]
        if not chosen:
            raise ValueError(f"no level-2 model for folds {folds} (have {self.folds})")
        names = self.features
        return sum(booster_proba(self.lgb[i], self.xgb[i], X, names, self.lgb_weight)
                   for i in chosen) / len(chosen)

    def meta(self) -> dict[str, Any]:
        return {
            "format": FORMAT, "kinds": list(self.kinds), "top_n": self.top_n,
            "features": self.features, "folds": list(self.folds),
            "lgb_weight": self.lgb_weight, "fold_mode": self.fold_mode,
            "vocab_size": len(self.vocab), "threshold": self.threshold,
            "size_features": self.size_features,
        }

    def save(self, store: Store, prefix: str) -> None:
        store.write_json(Level2Keys(prefix).vocab, list(self.vocab.codes))
        for fold, lgb_model, xgb_model in zip(self.folds, self.lgb, self.xgb, strict=True):
            save_fold(store, prefix, fold, lgb_model, xgb_model)
        store.write_json(Level2Keys(prefix).meta, self.meta())  # last: the model is complete

    @classmethod
    def load(cls, store: Store, prefix: str) -> Level2Model:
        try:
            meta = store.read_json(Level2Keys(prefix).meta)
        except KeyError:
            raise ValueError(f"no level-2 model at {prefix!r} in {store.uri}") from None
        if meta.get("format") != FORMAT:
            raise ValueError(f"{prefix}: level-2 model format {meta.get('format')}, "
                             f"this code reads {FORMAT}")
        vocab = Vocabulary(store.read_json(Level2Keys(prefix).vocab))
        lgbs, xgbs = [], []
        for fold in meta["folds"]:
            pair = load_fold(store, prefix, fold)
            if pair is None:
                raise ValueError(f"{prefix}: the boosters of fold {fold} are missing")
            lgbs.append(pair[0])
            xgbs.append(pair[1])
        model = cls(kinds=tuple(meta["kinds"]), top_n=int(meta["top_n"]), vocab=vocab,
                    folds=tuple(meta["folds"]), lgb=tuple(lgbs), xgb=tuple(xgbs),
                    lgb_weight=float(meta["lgb_weight"]), fold_mode=meta["fold_mode"],
                    threshold=meta.get("threshold"),
                    size_features=bool(meta.get("size_features", False)))
        for booster in (*model.lgb, *model.xgb):
            names = booster.feature_name() if hasattr(booster, "feature_name") else (
                booster.feature_names)
            if list(names) != model.features:
                raise ValueError(f"{prefix}: a booster's features differ from meta.json's")
        return model


def per_kind(frames: Iterable[pd.DataFrame], *, by_fold: bool = False,
             quarantine: list[Quarantined] | None = None) -> dict[Any, pd.DataFrame]:
    """Blend prediction frames per kind (or per ``(kind, fold)``): ``{group: blended}``."""
    groups: dict[Any, list[pd.DataFrame]] = {}
    for frame in frames:
        if frame.empty:
            continue
        for group, part in frame.groupby(["kind", "fold"] if by_fold else ["kind"], sort=True):
            name = tuple(group) if by_fold else group[0]
            groups.setdefault(name, []).append(part)
    return {g: blend(parts, quarantine=quarantine) for g, parts in sorted(groups.items())}


def predict(frames: Iterable[pd.DataFrame], model: Level2Model, *, drop_seg_fp: bool = True,
            quarantine: list[Quarantined] | None = None) -> pd.DataFrame:
    """The level-2 winner of every box of a page set.

    ``frames`` are classifier prediction frames with ``kind`` and ``fold`` (any number
    of files, every kind of ``model`` among them). In ``per_fold`` mode the folds that
    every kind has are used (a kind's extra folds, or fold -1, are left out); with no
    such fold, or in ``mean`` mode, each kind's logits are averaged over its files.

    Returns ``image_id, box_id, x, y, w, h, code, prob`` sorted by key; boxes whose
    winner is ``seg_fp`` are dropped unless ``drop_seg_fp`` is False. Bad rows are
    dropped and recorded in ``quarantine``.
    """
    frames = [f[f["kind"].isin(model.kinds)] for f in frames]
    frames = [f for f in frames if not f.empty]
    if not frames:
        return _no_boxes()
    folds = _common_folds(frames, model.kinds) if model.fold_mode == "per_fold" else []
    if folds:
        by_group = per_kind(frames, by_fold=True, quarantine=quarantine)
        parts = []
        for fold in folds:
            cands = model.candidates({k: by_group[(k, fold)] for k in model.kinds})
            prob = model.predict_proba(cands.X)
            parts.append(cands.boxes.iloc[cands.rows["box"].to_numpy()][[*KEY, *GEOMETRY]]
                         .assign(cand=cands.rows["cand"].to_numpy(), prob=prob))
        # A box's probabilities are averaged over the folds whose models saw it.
        rows = pd.concat(parts, ignore_index=True)
        seen = rows[rows["cand"] == SEG_FP].groupby(KEY).size().rename("n")
        rows = rows.groupby([*KEY, *GEOMETRY, "cand"], as_index=False)["prob"].sum()
        rows = rows.join(seen, on=KEY)
        boxes = rows[[*KEY, *GEOMETRY]].drop_duplicates(KEY).reset_index(drop=True)
        box = pd.MultiIndex.from_frame(boxes[KEY]).get_indexer(
            pd.MultiIndex.from_frame(rows[KEY]))
        result = winners(boxes, rows.assign(box=box), (rows["prob"] / rows["n"]).to_numpy(),
                         model.threshold)
    else:
        cands = model.candidates(per_kind(frames, quarantine=quarantine))
        result = winners(cands.boxes, cands.rows, model.predict_proba(cands.X),
                         model.threshold)
    if drop_seg_fp:
        result = result[result["code"] != SEG_FP]
    return result.sort_values(KEY, kind="stable").reset_index(drop=True)


def points(result: pd.DataFrame) -> dict[str, list[Point]]:
    """Submission points (box centres) of a :func:`predict` result, seg_fp boxes left out."""
    kept = result[result["code"] != SEG_FP]
    cx = kept["x"].to_numpy() + kept["w"].to_numpy() / 2
    cy = kept["y"].to_numpy() + kept["h"].to_numpy() / 2
    out: dict[str, list[Point]] = {}
    for image_id, code, x, y in zip(kept["image_id"], kept["code"], cx, cy, strict=True):
        out.setdefault(image_id, []).append(Point(code, float(x), float(y)))
    return out


def _common_folds(frames: list[pd.DataFrame], kinds: Sequence[str]) -> list[int]:
    """Folds that every kind has predictions from (none: average logits over folds)."""
    seen = pd.concat([f[["kind", "fold"]].drop_duplicates() for f in frames])
    sets = [set(seen.loc[seen["kind"] == k, "fold"].astype(int)) - {-1} for k in kinds]
    return sorted(set.intersection(*sets)) if sets else []


def _no_boxes() -> pd.DataFrame:
    return pd.DataFrame({
        "image_id": pd.Series(dtype=str), "box_id": pd.Series(dtype=np.int32),
        **{g: pd.Series(dtype=np.int32) for g in GEOMETRY},
        "code": pd.Series(dtype=object), "prob": pd.Series(dtype=np.float32),
    })
