"""The expectation suites, as data: one suite per guarded thing, one list per facts table.

Each entry is a Great Expectations expectation (``type`` and ``kwargs`` as in GX 1.x)
plus the ``reason`` a quarantined item is given. Limits are ``$PARAMETER`` references,
filled at run time from :class:`~kzjobs.validate.config.ValidateConfig` and the dataset
(its image ids, its vocabulary), so the suites stay fixed while profiles change limits.

The facts tables are built by :mod:`kzjobs.validate.facts`: ``pages`` has one row per
item (a CSV row or an image file), ``boxes``/``points`` one row per box or point.
"""

from __future__ import annotations

from typing import Any

Spec = dict[str, Any]


def _p(name: str) -> dict[str, str]:
    return {"$PARAMETER": name}


def _e(type_: str, reason: str, **kwargs: Any) -> Spec:
    return {"type": type_, "kwargs": kwargs, "reason": reason}


ID_EXPECTATIONS: list[Spec] = [
    _e("expect_column_values_to_be_unique", "duplicate image id", column="image_id"),
    _e("expect_column_values_to_match_regex", "unsafe image id", column="image_id",
       regex=_p("id_pattern")),
]

IMAGE_EXPECTATIONS: list[Spec] = [
    # Decoding needs Python (kzjobs.core.images.open_image, with its bomb guard); GX checks
    # that it gave no error.
    _e("expect_column_values_to_be_null", "image unreadable", column="image_error"),
    _e("expect_column_pair_values_to_be_equal", "file content does not match its name",
       column_A="format", column_B="expected_format", ignore_row_if="either_value_is_missing"),
    _e("expect_column_values_to_be_in_set", "unsupported image mode", column="mode",
       value_set=_p("modes")),
    _e("expect_column_values_to_be_between", "image width out of limits", column="width",
       min_value=_p("min_side"), max_value=_p("max_side")),
    _e("expect_column_values_to_be_between", "image height out of limits", column="height",
       min_value=_p("min_side"), max_value=_p("max_side")),
    _e("expect_column_values_to_be_between", "too many pixels", column="pixels",
       max_value=_p("max_pixels")),
    _e("expect_column_values_to_be_between", "file too large", column="file_bytes",
       max_value=_p("max_file_bytes")),
]


def _inside_page(what: str, x2: str, y2: str) -> list[Spec]:
    reason = f"{what} outside the page"
    return [
        _e("expect_column_values_to_be_between", reason, column="x", min_value=0),
        _e("expect_column_values_to_be_between", reason, column="y", min_value=0),
        _e("expect_column_pair_values_a_to_be_greater_than_b", reason, column_A="width",
           column_B=x2, or_equal=True, ignore_row_if="either_value_is_missing"),
        _e("expect_column_pair_values_a_to_be_greater_than_b", reason, column_A="height",
           column_B=y2, or_equal=True, ignore_row_if="either_value_is_missing"),
    ]


SUITES: dict[str, dict[str, list[Spec]]] = {
    # train.csv + unicode_translation.csv + images: what the models learn from.
    "annotations": {
        "pages": [
            *ID_EXPECTATIONS,
            _e("expect_column_values_to_be_in_set", "no image file for this id",
               column="image_id", value_set=_p("image_ids")),
            _e("expect_column_values_to_be_null", "malformed labels", column="labels_error"),
            *IMAGE_EXPECTATIONS,
        ],
        "boxes": [
            _e("expect_column_values_to_be_in_set", "code point not in the vocabulary",
               column="code", value_set=_p("vocabulary")),
            # Positive sizes are part of the label grammar (parse_labels refuses others).
            *_inside_page("box", "x2", "y2"),
        ],
    },
    # An incoming collection: one item per page (of an image, PDF, TIFF or manifest),
    # one per file refused.
    "batch": {
        "pages": [
            *ID_EXPECTATIONS,
            # What reading the collection refused, with its reason (kzjobs.data.collection):
            # unsupported file types, symbolic links out of it, broken or encrypted PDFs...
            _e("expect_column_values_to_be_null", "file not read", column="file_error"),
            *IMAGE_EXPECTATIONS,
        ],
    },
    # A submission-format CSV for a collection.
    "predictions": {
        "pages": [
            *ID_EXPECTATIONS,
            _e("expect_column_values_to_be_in_set", "unknown image id", column="image_id",
               value_set=_p("image_ids")),
            _e("expect_column_values_to_be_null", "malformed labels", column="labels_error"),
            _e("expect_column_values_to_be_between", "too many predictions on the page",
               column="n_points", max_value=_p("max_points")),
            _e("expect_column_values_to_be_null", "page size unknown", column="size_error"),
        ],
        "points": [
            _e("expect_column_values_to_be_in_set", "code point not in the vocabulary",
               column="code", value_set=_p("vocabulary")),
            *_inside_page("point", "x", "y"),
        ],
    },
}

KINDS = tuple(SUITES)
