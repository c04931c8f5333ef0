"""Classifier predictions as frames: the prediction file's contract, its reading and
checks, the truth of a run's boxes, and the top-k list helpers the other steps share.

A prediction file (the classifier's contract) has one row per box: ``image_id``,
``box_id``, ``x``, ``y``, ``w``, ``h``, ``classes`` (top-k codes, best first, ``seg_fp``
included) and ``logits`` (same order), with ``kind`` and ``fold`` as columns or as
file metadata. Rows are joined on ``(image_id, box_id)``, never by position.

Bad rows (mismatched lists, non-finite logits, duplicate keys) are dropped and, when a
``quarantine`` list is given, recorded there with their reason; the rest of the batch
goes on.

This module imports pandas at the top: import it inside functions from CLI code.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from kzjobs.core.keys import CLASSIFY_OOF, DETECT_OOF, RunKeys, classify_fold_kind
from kzjobs.core.quarantine import Quarantined
from kzjobs.core.store import Store, key_name
from kzjobs.data.format import BOX_CODES, UNKNOWN, Box, read_annotations

log = logging.getLogger(__name__)
STAGE = "blend"  # the stage whose checks these are, as its quarantine records name it

KEY = ["image_id", "box_id"]
GEOMETRY = ["x", "y", "w", "h"]
PRED_COLUMNS = (*KEY, *GEOMETRY, "classes", "logits")


def read_predictions(data: bytes, *, name: str = "predictions") -> pd.DataFrame:
    """A classifier prediction parquet as a frame, with ``kind``/``fold`` as columns.

    ``kind`` and ``fold`` come from the columns when present, else from the file's
    metadata; ``fold`` is ``-1`` when neither has it. Raises ``ValueError`` naming
    ``name`` when the file is unreadable or lacks a column.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowException, OSError) as exc:
        raise ValueError(f"{name}: not a readable parquet file: {exc}") from None
    return predictions_frame(table, name=name)


def predictions_frame(table: Any, *, name: str = "predictions") -> pd.DataFrame:
    """A classifier prediction table (pyarrow) as a frame; see :func:`read_predictions`."""
    import pyarrow as pa

    missing = [c for c in PRED_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"{name}: missing columns {missing} (has {table.column_names})")
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    # Top-k lists stay arrow-backed (see _arrow); the other columns are plain pandas.
    frame = table.to_pandas(
        types_mapper=lambda t: pd.ArrowDtype(t) if pa.types.is_list(t) else None)
    if "kind" not in frame:
        frame["kind"] = meta.get("kind", "")
    if "fold" not in frame:
        frame["fold"] = int(meta.get("fold", -1))
    frame["image_id"] = frame["image_id"].astype(str)
    frame["box_id"] = frame["box_id"].astype(np.int32)
    return frame


def prediction_keys(store: Store, refs: Iterable[str]) -> list[str]:
    """Each ref is a ``.parquet`` key, or a prefix whose ``.parquet`` keys are all taken."""
    keys: list[str] = []
    for ref in refs:
        if ref.endswith(".parquet"):
            keys.append(ref)
            continue
        found = [k for k in store.list(ref) if k.endswith(".parquet")]
        if not found:
            raise ValueError(f"no .parquet prediction files under {ref!r} in {store.uri}")
        keys.extend(found)
    return keys


def load_predictions(store: Store, refs: Iterable[str],
                     quarantine: list[Quarantined] | None = None) -> list[pd.DataFrame]:
    """Read every prediction file named by ``refs`` (see :func:`prediction_keys`).

    An unreadable file raises, or, when a ``quarantine`` list is given, is recorded
    there with its reason and skipped.
    """
    frames = []
    for key in prediction_keys(store, refs):
        try:
            frames.append(read_predictions(store.read_bytes(key), name=key))
        except ValueError as exc:
            if quarantine is None:
                raise
            log.warning("quarantined prediction file %s: %s", key, exc)
            quarantine.append(Quarantined(item=key, reason=str(exc), stage=STAGE))
    return frames


def truth_frame(pages: Mapping[str, Sequence[Box]]) -> pd.DataFrame:
    """Box files (detector OOF ``train.csv`` format) as ``image_id, box_id, x, y, w, h, true``.

    ``box_id`` is the box's index in its page's list. Boxes marked ``unk`` (unlabelled
    pages) carry no truth and are left out.
    """
    rows = [
        (image_id, i, b.x, b.y, b.w, b.h, b.code)
        for image_id, boxes in pages.items()
        for i, b in enumerate(boxes)
        if b.code != UNKNOWN
    ]
    frame = pd.DataFrame(rows, columns=[*KEY, *GEOMETRY, "true"])
    return frame.astype({"box_id": np.int32, **dict.fromkeys(GEOMETRY, np.int32)})


def read_truth(store: Store, keys: Iterable[str]) -> pd.DataFrame:
    """The truth of the boxes in one or more box files (see :func:`truth_frame`)."""
    pages: dict[str, list[Box]] = {}
    for key in keys:
        for image_id, boxes in read_annotations(store.read_bytes(key), allow=BOX_CODES).items():
            if image_id in pages:
                raise ValueError(f"{key}: page {image_id!r} is also in another box file")
            pages[image_id] = boxes
    return truth_frame(pages)


def oof_keys(store: Store, run: str, kinds: Iterable[str] | None = None) -> list[str]:
    """``<run>/classify/<kind>/fold{K}/oof.parquet`` of every kind found, or of ``kinds``;
    raises when there is none."""
    root = RunKeys(run).classify_root
    wanted = set(kinds) if kinds is not None else None
    keys = [k for k in store.list(root) if key_name(k) == CLASSIFY_OOF
            and (wanted is None or classify_fold_kind(k) in wanted)]
    if not keys:
        raise ValueError(f"no classifier OOF predictions under {root} in {store.uri}")
    return keys


def load_oof(store: Store, run: str, kinds: Iterable[str] | None = None
             ) -> tuple[list[pd.DataFrame], pd.DataFrame]:
    """A training run's OOF classifier predictions and their truth.

    Reads ``<run>/classify/<kind>/fold{K}/oof.parquet`` (every kind found, or only
    ``kinds``) and the detector's ``<run>/detect/fold{K}/oof.csv`` box files.
    """
    pred_keys = oof_keys(store, run, kinds)
    root = RunKeys(run).detect_root
    box_keys = [k for k in store.list(root) if key_name(k) == DETECT_OOF]
    if not box_keys:
        raise ValueError(f"no detector OOF boxes under {root} in {store.uri}")
    return load_predictions(store, pred_keys), read_truth(store, box_keys)


def _arrow(column: pd.Series) -> Any:
    """A list column as one pyarrow ``ListArray`` (no copy when it is arrow-backed).

    Top-k lists are handled as arrow arrays, not row by row: a prediction file read by
    :func:`read_predictions` is already arrow-backed.
    """
    import pyarrow as pa

    if isinstance(column.dtype, pd.ArrowDtype):
        array = pa.array(column.array)
    else:
        array = pa.array(column, from_pandas=True)
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


def lengths(column: pd.Series) -> np.ndarray:
    """The length of each list of a list column (0 for a missing list)."""
    if column.empty:
        return np.zeros(0, np.int64)
    counts = _arrow(column).value_lengths().fill_null(0)
    return counts.to_numpy(zero_copy_only=False).astype(np.int64)


def flatten(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(row, rank, class, logit)`` arrays, one entry per top-k item of each row.

    The two lists of a row must have the same length (:func:`check_predictions`).
    """
    import pyarrow as pa

    n = lengths(frame["classes"])
    row = np.repeat(np.arange(len(frame)), n)
    rank = np.arange(len(row)) - np.repeat(np.cumsum(n) - n, n)
    if not len(row):
        return row, rank, np.array([], object), np.array([], np.float64)
    classes = _arrow(frame["classes"]).flatten().cast(pa.string())
    logits = _arrow(frame["logits"]).flatten().cast(pa.float64())
    return (row, rank, classes.to_numpy(zero_copy_only=False).astype(object),
            logits.to_numpy(zero_copy_only=False).astype(np.float64))


def list_column(values: np.ndarray, counts: np.ndarray, kind: Any) -> pd.arrays.ArrowExtensionArray:
    """A list column (arrow-backed) from flat ``values`` cut into lists of ``counts``."""
    import pyarrow as pa

    offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
    lists = pa.ListArray.from_arrays(offsets, pa.array(values, type=kind))
    return pd.arrays.ArrowExtensionArray(lists)


def record_bad_rows(quarantine: list[Quarantined] | None, rows: pd.DataFrame, reason: str) -> None:
    if rows.empty:
        return
    log.warning("quarantined %d prediction rows: %s", len(rows), reason)
    if quarantine is not None:
        for image_id, box_id, model in zip(rows["image_id"], rows["box_id"],
                                           rows.get("model", [None] * len(rows)), strict=True):
            quarantine.append(Quarantined(item=image_id, box_id=int(box_id), model=model,
                                          reason=reason, stage=STAGE))


def _drop(frame: pd.DataFrame, quarantine: list[Quarantined] | None,
          checks: list[tuple[np.ndarray, str]]) -> pd.DataFrame:
    """``frame`` without the rows a check flags; each bad row is recorded once, first reason."""
    bad = np.zeros(len(frame), bool)
    for mask, reason in checks:
        record_bad_rows(quarantine, frame[mask & ~bad], reason)
        bad |= mask
    return frame[~bad].reset_index(drop=True)


def check_predictions(frame: pd.DataFrame, quarantine: list[Quarantined] | None = None
                      ) -> pd.DataFrame:
    """The rows of one model's frame that are usable; the others are quarantined.

    Each kept row's top-k is sorted best first (the contract says it already is).
    """
    frame = frame.reset_index(drop=True)
    n_cls, n_log = lengths(frame["classes"]), lengths(frame["logits"])
    good = _drop(frame, quarantine, [
        (n_cls != n_log, "classes and logits differ in length"),
        (n_cls == 0, "empty top-k"),
        ((frame["w"] <= 0).to_numpy() | (frame["h"] <= 0).to_numpy(), "box size not positive"),
        (frame.duplicated(KEY, keep=False).to_numpy(), "duplicate (image_id, box_id) in one file"),
    ])
    # Per-item checks need equal list lengths, hence the second pass.
    row, _rank, classes, logits = flatten(good)
    finite = np.ones(len(good), bool)
    np.logical_and.at(finite, row, np.isfinite(logits))
    unique = np.ones(len(good), bool)
    np.logical_and.at(unique, row, ~pd.DataFrame({"r": row, "c": classes}).duplicated().to_numpy())
    good = _drop(good, quarantine, [(~finite, "non-finite logit"),
                                    (~unique, "a class listed twice")])
    # Sort each top-k best first (a no-op for files that follow the contract).
    row, _rank, classes, logits = flatten(good)
    return with_top_k(good, row, classes, logits)


def with_top_k(frame: pd.DataFrame, row: np.ndarray, classes: np.ndarray,
               logits: np.ndarray) -> pd.DataFrame:
    """``frame`` with its top-k lists made from flat ``(row, class, logit)`` entries
    (as :func:`flatten` gives them), each row's sorted best first."""
    import pyarrow as pa

    order = np.lexsort((-logits, row))
    counts = np.bincount(row, minlength=len(frame))
    return frame.assign(
        classes=list_column(classes[order], counts, pa.string()),
        logits=list_column(logits[order].astype(np.float32), counts, pa.float32()))


def top_two(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(winner code, top logit, second logit)`` per row; second is NaN for a 1-item list."""
    row, rank, classes, logits = flatten(frame)
    winner = np.full(len(frame), None, dtype=object)
    top = np.full(len(frame), np.nan)
    second = np.full(len(frame), np.nan)
    winner[row[rank == 0]] = classes[rank == 0]
    top[row[rank == 0]] = logits[rank == 0]
    second[row[rank == 1]] = logits[rank == 1]
    return winner, top, second


def box_folds(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """``image_id, box_id, fold`` of OOF predictions: each box must have exactly one fold."""
    pairs = pd.concat([f[[*KEY, "fold"]] for f in frames], ignore_index=True).drop_duplicates()
    if (pairs["fold"] < 0).any():
        raise ValueError("OOF predictions without a fold (fold -1, or no 'fold' column/metadata)")
    several = pairs.duplicated(KEY, keep=False)
    if several.any():
        first = pairs[several].iloc[0]
        raise ValueError(
            f"{int(several.sum())} boxes were predicted by models of several folds, e.g. "
            f"{first['image_id']} box {first['box_id']}: these are not OOF predictions"
        )
    return pairs.astype({"fold": int})


def attach_truth(frame: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with the ``true`` code of each box; boxes without truth are left out.

    Raises when a joined box's geometry differs from the truth's: the box ids then
    refer to different box files, and every joined label would be wrong.
    """
    merged = frame.merge(truth, on=KEY, how="inner", suffixes=("", "_truth"))
    differs = np.zeros(len(merged), bool)
    for g in GEOMETRY:
        differs |= merged[g].to_numpy() != merged[f"{g}_truth"].to_numpy()
    if differs.any():
        first = merged[differs].iloc[0]
        raise ValueError(
            f"{int(differs.sum())} boxes differ from their truth box, e.g. "
            f"{first['image_id']} box {first['box_id']}: predictions and truth come from "
            "different box files"
        )
    return merged.drop(columns=[f"{g}_truth" for g in GEOMETRY])
