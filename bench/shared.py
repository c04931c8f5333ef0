"""What several benches share: a variant of a bundle's profile, and the F1 of a decided
frame. Both bench.pipeline and bench.inference import it, so neither imports the other."""

from __future__ import annotations

from typing import Any


def variant_profile(base: dict[str, Any], overrides: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The bundle's profile with some of its sections' fields replaced."""
    return base | {section: base.get(section, {}) | fields
                   for section, fields in overrides.items()}


def decided_f1(truth: dict[str, Any], decided: Any, *, pages: bool = False) -> dict[str, Any]:
    """Competition F1 (overall and per book) of a decided frame (``image_id, x, y, w, h,
    code`` per kept box): each box counts as its centre. With ``pages``, also each page's
    ``[tp, fp, fn]`` (what :func:`ladder_gains` resamples)."""
    from kzjobs.data.format import Point
    from kzjobs.method.metric import score

    points: dict[str, list[Point]] = {i: [] for i in truth}
    for row in decided.itertuples(index=False):
        points[row.image_id].append(Point(row.code, row.x + row.w / 2, row.y + row.h / 2))
    result = score(truth, points)
    figures = {"f1": round(result.f1, 4),
               "by_book": {b: round(c.f1, 4) for b, c in sorted(result.by_book.items())}}
    if pages:
        figures["pages"] = {i: [c.tp, c.fp, c.fn] for i, c in result.by_page.items()}
    return figures


def reference_rung(rung: str, ladder: dict[str, Any]) -> str | None:
    """The rung a ladder's rung is judged against: a shifted rung (``"<rung>, <shift>"``)
    against the same rung unshifted; ``blend`` against the best single model; each later
    step of the ladder against the step before it; single models against nothing."""
    if ", " in rung:
        return rung.split(", ", 1)[0]
    steps = [r for r in ("best single model", "blend", "blend + pseudolabels", "+ level 2")
             if r in ladder]
    return steps[steps.index(rung) - 1] if rung in steps[1:] else None


def ladder_gains(ladder: dict[str, Any], *, resamples: int = 1000, level: float = 0.9
                 ) -> dict[str, Any]:
    """Each rung with its gain over its :func:`reference_rung` as ``gain`` (a paired
    bootstrap over pages, :func:`kzjobs.method.metric.f1_gain`); the rungs' ``pages`` counts are
    dropped from the result."""
    from kzjobs.method.metric import Counts, f1_gain

    def counts(rung: str) -> dict[str, Counts]:
        return {i: Counts(*c) for i, c in ladder[rung]["pages"].items()}

    out = {}
    for rung, figures in ladder.items():
        out[rung] = {k: v for k, v in figures.items() if k != "pages"}
        if (ref := reference_rung(rung, ladder)) is not None:
            out[rung]["gain"] = {"vs": ref} | f1_gain(counts(ref), counts(rung),
                                                      resamples=resamples, level=level)
    return out
