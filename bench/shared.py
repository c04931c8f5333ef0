"""What several benches share: a variant of a bundle's profile, and the F1 of a decided
frame. Both bench.pipeline and bench.inference import it, so neither imports the other."""

from __future__ import annotations

from typing import Any


def variant_profile(base: dict[str, Any], overrides: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The bundle's profile with some of its sections' fields replaced."""
    return base | {section: base.get(section, {}) | fields
                   for section, fields in overrides.items()}


def decided_f1(truth: dict[str, Any], decided: Any) -> dict[str, Any]:
    """Competition F1 (overall and per book) of a decided frame (``image_id, x, y, w, h,
    code`` per kept box): each box counts as its centre."""
    from kzjobs.data.format import Point
    from kzjobs.metric import score

    points: dict[str, list[Point]] = {i: [] for i in truth}
    for row in decided.itertuples(index=False):
        points[row.image_id].append(Point(row.code, row.x + row.w / 2, row.y + row.h / 2))
    result = score(truth, points)
    return {"f1": round(result.f1, 4),
            "by_book": {b: round(c.f1, 4) for b, c in sorted(result.by_book.items())}}
