"""Level-2 settings of a profile (pydantic only: importing this must stay cheap)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

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


class PseudoConfig(BaseModel):
    """The pseudolabel rule of :mod:`kzjobs.method.pseudo`.

    It lives here, not in ``kzjobs/method/pseudo.py``, so that ``kzjobs.core.profile`` imports it
    without a cycle through ``kzjobs.core.job``.
    """

    model_config = ConfigDict(extra="forbid")

    # "margin": the blended top logit beats the second by min_margin and the second is at
    # most max_second (the seed's --min-gap 5, --max-second-score 10). "quantile": the
    # `keep` fraction of boxes with the widest margin (the seed kept the top 80%).
    # "calibrated": the widest set of margins whose boxes are right `target_accuracy` of
    # the time on the run's labelled OOF predictions (logit scales differ between
    # models; weak models keep few boxes instead of many wrong ones).
    rule: Literal["margin", "quantile", "calibrated"] = "margin"
    min_margin: float = 5.0
    max_second: float = 10.0
    keep: float = Field(0.8, gt=0.0, le=1.0)
    target_accuracy: float = Field(0.99, gt=0.0, le=1.0)
    keep_seg_fp: bool = True  # confident seg_fp winners become seg_fp targets
    # Lowered seg_fp logit on the pages of new collections (kzjobs.method.blend.shift_seg_fp):
    # a number, or "fit": the shift under which the incoming blend makes contested
    # seg_fp calls (won by at most max_seg_fp_shift) no more often than the same models
    # do on their OOF pages (kzjobs.method.blend.fit_seg_fp_shift; no labels needed). The
    # bundle carries it to recognition; OOF pages, which level 2 and the calibrated rule
    # learn from, are never shifted.
    seg_fp_shift: Literal["fit"] | Annotated[float, Field(ge=0.0)] = 0.0
    max_seg_fp_shift: float = Field(6.0, ge=0.0)
    # Per-book class shifts on the incoming collection (kzjobs.method.blend.fit_class_shift; no
    # labels needed): each book's class shares are brought, within chance, to those the
    # same models call on their OOF pages. An unfamiliar hand's systematic misreadings
    # (its せ read as ぜ) are undone before pseudolabels are chosen, and the bundle carries
    # each book's shifts to the recognition of its pages. Needs the OOF run (--run).
    # Recognition fits every book's shifts again, on the final models' logits
    # (kzjobs.recognize.adapt; `kzjobs recognize --adapt/--no-adapt` overrides).
    class_shift: bool = False
    max_class_shift: float = Field(3.0, ge=0.0)
    # A class neither expected nor called this often in a book is left unshifted.
    min_class_expected: float = Field(10.0, gt=0.0)
    # Pages of a book recognition fits its shifts on, evenly spaced through it: enough to
    # count its common classes, and memory that does not grow with the book.
    class_shift_pages: int = Field(400, ge=1)
