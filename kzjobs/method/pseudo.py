"""Pseudolabels: confident blended predictions on incoming, unlabelled pages become labels.

Every classifier (each kind, each fold) has predicted the boxes of the incoming
collection; their logits are blended (:mod:`kzjobs.method.blend`) and a box is kept when the
blend is sure (the profile's ``pseudo`` rule, see
:class:`~kzjobs.method.config.PseudoConfig`). Kept ``seg_fp`` winners stay, as
``seg_fp`` targets. The same rule is measured on the run's labelled OOF predictions:
the fraction it keeps and how often what it keeps is right.

Before the rule, the incoming blend's ``seg_fp`` logit may be lowered (the profile's
``pseudo.seg_fp_shift``, fitted without labels; :func:`fit_shift`): models read an
unfamiliar hand by calling many of its characters ``seg_fp``, and kept as labels those
calls would teach them to drop the hand. The shift is reported, and the bundle carries
it to every page recognition reads. Then each book's class logits may be shifted so
that the book's class shares match the OOF pages' (``pseudo.class_shift``;
:func:`fit_class_shifts`): a hand whose ``せ`` the models read as ``ぜ`` makes far more
``ぜ`` than the books they know. The bundle carries these shifts to those books' pages.

The output is a ``train.csv``-format file (``CODE x y w h``, ``seg_fp`` allowed) of
the kept boxes per page, which the classifier's training job takes as extra
OOF-style targets for fine-tuning, and a JSON report.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field

from kzjobs.core.job import Cli, Job
from kzjobs.core.quarantine import Quarantined, beside, entries, write_quarantine
from kzjobs.method.config import PseudoConfig

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from kzjobs.data.format import Box

log = logging.getLogger(__name__)


def margins(blended: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(winner, margin, second)`` per box of a blend; NaN margin for a 1-class list."""
    from kzjobs.method.predictions import top_two

    winner, top, second = top_two(blended)
    return winner, top - second, second


def calibrate(known: pd.DataFrame, target: float) -> float:
    """The lowest margin threshold whose boxes, on a labelled blend, are right ``target``
    of the time (the widest such set); infinity when no set is that good."""
    import numpy as np

    winner, margin, _ = margins(known)
    right = winner == known["true"].to_numpy(dtype=object)
    ok = ~np.isnan(margin)
    order = np.argsort(-margin[ok], kind="stable")
    hits = np.cumsum(right[ok][order])
    good = np.flatnonzero(hits / np.arange(1, len(hits) + 1) >= target)
    return float(margin[ok][order][good[-1]]) if len(good) else float("inf")


def select(blended: pd.DataFrame, cfg: PseudoConfig, *, threshold: float | None = None
           ) -> tuple[np.ndarray, float]:
    """``(kept mask, margin threshold)`` of the rule on a blend's boxes.

    The calibrated rule needs its ``threshold`` (from :func:`calibrate`); the others
    derive it (a given one overrides theirs).
    """
    import numpy as np

    from kzjobs.data.format import SEG_FP

    winner, margin, second = margins(blended)
    if threshold is None:
        if cfg.rule == "calibrated":
            raise ValueError("the calibrated pseudolabel rule needs labelled OOF predictions "
                             "(a training run) to set its threshold")
        if cfg.rule == "margin":
            threshold = cfg.min_margin
        else:
            known = margin[~np.isnan(margin)]
            threshold = float(np.quantile(known, 1 - cfg.keep)) if len(known) else np.inf
    kept = margin >= threshold
    if cfg.rule == "margin":
        kept &= second <= cfg.max_second
    if not cfg.keep_seg_fp:
        kept &= winner != SEG_FP
    return kept, float(threshold)


def labels(blended: pd.DataFrame, kept: np.ndarray) -> dict[str, list[Box]]:
    """The kept boxes per page (box id order), each with its winning code."""
    from kzjobs.data.format import Box

    winner, _, _ = margins(blended)
    part = blended.assign(code=winner)[kept].sort_values(["image_id", "box_id"])
    pages: dict[str, list[Box]] = {}
    for row in part.itertuples(index=False):
        pages.setdefault(row.image_id, []).append(Box(row.code, row.x, row.y, row.w, row.h))
    return pages


def evaluate(known: pd.DataFrame, cfg: PseudoConfig) -> dict[str, Any]:
    """The rule on a labelled blend (``true`` column): fraction kept, accuracy of what it
    keeps and of all boxes.

    The calibrated rule is measured honestly: each fold's boxes (``fold`` column) are
    judged with the threshold calibrated on the other folds.
    """
    import numpy as np

    from kzjobs.data.format import SEG_FP

    winner, _, _ = margins(known)
    right = winner == known["true"].to_numpy(dtype=object)
    if cfg.rule == "calibrated":
        kept = np.zeros(len(known), bool)
        fold = known["fold"].to_numpy() if "fold" in known else np.zeros(len(known), int)
        for f in np.unique(fold):
            rest = known[fold != f]
            part = known[fold == f]
            threshold = calibrate(rest if len(rest) else part, cfg.target_accuracy)
            kept[fold == f] = select(part, cfg, threshold=threshold)[0]
        threshold = calibrate(known, cfg.target_accuracy)
    else:
        kept, threshold = select(known, cfg)
    n_kept = int(kept.sum())
    return {
        "boxes": len(known),
        "kept": n_kept,
        "fraction_kept": n_kept / len(known) if len(known) else 0.0,
        "accuracy_kept": float(right[kept].mean()) if n_kept else None,
        "accuracy_all": float(right.mean()) if len(known) else None,
        "seg_fp_kept": int((kept & (winner == SEG_FP)).sum()),
        "threshold": _finite(threshold),
    }


def fit_shift(blended: pd.DataFrame, known: pd.DataFrame | None, cfg: PseudoConfig
              ) -> dict[str, Any]:
    """The ``seg_fp`` shift for an incoming blend (``cfg.seg_fp_shift``: a number, or
    fitted to ``known``, the same models' OOF blend) and the ``seg_fp`` rates it sets.

    ``shift`` is what the bundle carries; ``rates`` are the fractions of boxes that
    ``seg_fp`` wins by at most ``within`` (``max_seg_fp_shift``) on the OOF pages and on
    the incoming ones before and after the shift.
    """
    from kzjobs.method.shifts import fit_seg_fp_shift, seg_fp_rate, shift_seg_fp

    within = cfg.max_seg_fp_shift
    oof_rate = seg_fp_rate(known, within) if known is not None else None
    if cfg.seg_fp_shift != "fit":
        shift = float(cfg.seg_fp_shift)
    elif oof_rate is None:
        raise ValueError("a fitted seg_fp shift needs the training run's OOF predictions "
                         "(--run) to know how often its models call seg_fp")
    else:
        shift = fit_seg_fp_shift(blended, oof_rate, cfg.max_seg_fp_shift)
    return {"shift": shift, "rule": cfg.seg_fp_shift, "within": within, "rates": {
        "oof": oof_rate, "incoming": seg_fp_rate(blended, within),
        # of the same calls: those won by more than `within` came down by the shift too
        "incoming_shifted": seg_fp_rate(shift_seg_fp(blended, shift), within - shift)}}


def fit_class_shifts(blended: pd.DataFrame, known: pd.DataFrame | None, cfg: PseudoConfig
                     ) -> dict[str, dict[str, float]]:
    """``{book: {code: shift}}`` for an incoming blend when ``cfg.class_shift`` is on:
    each book's shifts fitted to the class shares of ``known``, the same models' OOF
    blend (:func:`kzjobs.method.shifts.fit_class_shift`). Empty when off."""
    from kzjobs.method.shifts import class_shares, fit_book_shifts

    if not cfg.class_shift:
        return {}
    if known is None:
        raise ValueError("class shifts need the training run's OOF predictions (--run) to "
                         "know how often its models call each class")
    return fit_book_shifts(blended, class_shares(known), max_shift=cfg.max_class_shift,
                           min_expected=cfg.min_class_expected)


def _finite(value: float) -> float | None:
    """JSON has no infinity: a threshold nothing passes is reported as null."""
    return value if value != float("inf") else None


def default_report_key(out: str) -> str:
    """Where the pseudolabel job reports on its labels file by default: ``x.csv`` -> ``x.json``."""
    return f"{out.rsplit('.', 1)[0]}.json"


class PseudoJob(Job):
    """Pseudolabel an incoming collection from its classifier predictions."""

    preds: list[str] = Field(description="Prediction parquet key or prefix of the collection "
                             "(repeatable).")
    out: str = Field(description="Store key of the labels file (train.csv format).")
    report: str = Field(
        "", description="Store key of the JSON report; default: --out with a .json suffix.")
    oof_run: Annotated[str, Cli(("--run",))] = Field(
        "", description="Training run prefix: its OOF predictions measure the rule.")

    @property
    def report_key(self) -> str:
        return self.report or default_report_key(self.out)

    def run(self) -> dict[str, Any]:
        from kzjobs.data.format import SEG_FP, write_annotations
        from kzjobs.method.blend import blend
        from kzjobs.method.predictions import attach_truth, box_folds, load_oof, load_predictions
        from kzjobs.method.shifts import shift_books, shift_seg_fp

        if self.store.exists(self.report_key) and self.store.exists(self.out):
            return self.store.read_json(self.report_key) | {"skipped": True}
        cfg = self.profile.pseudo
        quarantine: list[Quarantined] = []
        frames = load_predictions(self.store, self.preds, quarantine)
        if not frames:
            raise ValueError(f"no readable prediction file in {self.preds}: {entries(quarantine)}")
        kinds = sorted({k for f in frames for k in f["kind"].unique()})
        known = None
        if self.oof_run:
            # The same kinds, blended the same way, on labelled pages.
            oof, truth = load_oof(self.store, self.oof_run, kinds)
            known = attach_truth(blend(oof), truth).merge(box_folds(oof), on=["image_id",
                                                                               "box_id"])
        threshold = (calibrate(known, cfg.target_accuracy)
                     if cfg.rule == "calibrated" and known is not None else None)
        blended = blend(frames, quarantine=quarantine)
        shift = fit_shift(blended, known, cfg)
        blended = shift_seg_fp(blended, shift["shift"])
        class_shifts = fit_class_shifts(blended, known, cfg)
        winner_before, _, _ = margins(blended)
        blended = shift_books(blended, class_shifts)
        kept, threshold = select(blended, cfg, threshold=threshold)
        pages = labels(blended, kept)
        self.store.write_bytes(self.out, write_annotations(pages))
        winner, _, _ = margins(blended)
        result: dict[str, Any] = {
            "out": self.out, "report": self.report_key, "rule": cfg.model_dump(),
            "models": len(frames), "kinds": kinds,
            "boxes": len(blended), "kept": int(kept.sum()),
            "fraction_kept": float(kept.mean()) if len(blended) else 0.0,
            "seg_fp_kept": int((kept & (winner == SEG_FP)).sum()),
            "threshold": _finite(threshold),
            "seg_fp_shift": shift,
            "class_shift": {"books": class_shifts,
                            "winners_changed": int((winner != winner_before).sum())},
            "pages": int(blended["image_id"].nunique()), "pages_with_labels": len(pages),
            "quarantined": len(quarantine),
            "validation": evaluate(known, cfg) if known is not None else None,
        }
        if quarantine:
            key = beside(self.report_key)
            write_quarantine(self.store, key, quarantine)
            result["quarantine"] = key
        log.info("pseudolabels: kept %d of %d boxes", result["kept"], result["boxes"])
        self.store.write_json(self.report_key, result)  # last: a re-run skips a finished job
        return result

