"""Level-2 settings of a profile (pydantic only: importing this must stay cheap)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


def _lgb_params() -> dict[str, Any]:
    # The seed's LightGBM parameters (kuzushiji.classify.level2).
    return {
        "objective": "binary",
        "learning_rate": 0.1,
        "num_leaves": 31,
        "min_data_in_leaf": 20,
        "feature_fraction": 0.9,
        "bagging_fraction": 0.8,
        "bagging_freq": 5,
        "scale_pos_weight": 1.2,
    }


def _xgb_params() -> dict[str, Any]:
    return {
        "objective": "binary:logistic",
        "eta": 0.1,
        "max_depth": 6,
        "min_child_weight": 1,
        "subsample": 0.8,
        "colsample_bytree": 0.9,
        "tree_method": "hist",
    }


class Level2Config(BaseModel):
    model_config = ConfigDict(extra="forbid")

    top_n: int = Field(3, ge=1)  # each kind's top-n classes are features and candidates
    lgb_params: dict[str, Any] = Field(default_factory=_lgb_params)
    xgb_params: dict[str, Any] = Field(default_factory=_xgb_params)
    lgb_rounds: int = Field(200, ge=1)
    xgb_rounds: int = Field(200, ge=1)
    lgb_weight: float = Field(0.5, ge=0.0, le=1.0)  # XGBoost gets the rest
    # On pages predicted by every fold's classifiers: "per_fold" builds features from
    # each fold's models and averages level 2's probabilities over folds (what the seed
    # found better); "mean" averages the classifiers' logits over folds first.
    fold_mode: Literal["per_fold", "mean"] = "per_fold"
    # "argmax": the most probable candidate wins, seg_fp included (the seed's rule).
    # "fitted": the best character also wins when its probability reaches a cut fitted to
    # the OOF rows' F1 (kzjobs.level2.features.fit_threshold; never worse than argmax there).
    decision: Literal["fitted", "argmax"] = "fitted"
    # The box's size on its page, and whether the candidate is a small kana or has a
    # voicing mark (kzjobs.level2.features.SIZE_FEATURES): ぁ and あ differ mostly in size.
    size_features: bool = True
    threads: int = Field(1, ge=0)  # 0: every core (OpenMP threads spin badly on a busy CPU)
    seed: int = 0
