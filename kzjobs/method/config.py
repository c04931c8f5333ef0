"""The method's settings in a profile (pydantic only: importing this must stay cheap, and
``kzjobs.core.profile`` imports it without a cycle through ``kzjobs.core.job``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class PseudoConfig(BaseModel):
    """The pseudolabel rule (:mod:`kzjobs.method.pseudo`) and the per-book shifts
    (:mod:`kzjobs.method.shifts`) of a profile."""

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
    # Fine-tune the classifiers on the pseudolabels (a kind of their own, "<kind>-ft",
    # which level 2 and the bundle then use). Off: the incoming collections only fit the
    # shifts below, and level 2 stacks the first classifiers.
    finetune: bool = True
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
