"""Blend classifier predictions: average each class's logit over models, joined by box.

A prediction file (the classifier's contract) has one row per box: ``image_id``,
``box_id``, ``x``, ``y``, ``w``, ``h``, ``classes`` (top-k codes, best first, ``seg_fp``
included) and ``logits`` (same order), with ``kind`` and ``fold`` as columns or as
file metadata. Rows are joined on ``(image_id, box_id)``, never by position.

**A class missing from a model's top-k** gets that model's k-th (lowest listed) logit
for the box, as the seed's blend did. The class's real logit is at most that value, so
it is the tightest bound the file holds; a fixed floor (or zero) would punish a class
the model merely ranked k+1 as hard as one it ruled out.

A box blended from several models takes the mean over the models that predicted it
(``n_models``). Bad rows (mismatched lists, non-finite logits, duplicate keys, boxes
whose geometry differs between models) are dropped and, when a ``quarantine`` list is
given, recorded there with their reason; the rest of the batch goes on.

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
from kzjobs.data.format import BOX_CODES, SEG_FP, UNKNOWN, Box, read_annotations

log = logging.getLogger(__name__)
STAGE = "blend"  # the stage its quarantine records name

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


def _record(quarantine: list[Quarantined] | None, rows: pd.DataFrame, reason: str) -> None:
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
        _record(quarantine, frame[mask & ~bad], reason)
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


def blend(frames: Sequence[pd.DataFrame], *, top_k: int | None = None,
          quarantine: list[Quarantined] | None = None) -> pd.DataFrame:
    """Mean logit per class over the models (frames) that predicted each box.

    Returns one row per ``(image_id, box_id)``, sorted by key: the geometry,
    ``classes`` and ``logits`` (the union of the models' top-k, best first, cut to
    ``top_k`` if given) and ``n_models``. A missing class takes that model's k-th logit
    (see the module doc).
    """
    import pyarrow as pa

    checked = []
    for m, frame in enumerate(frames):
        model = f"{frame['kind'].iloc[0]}/fold{frame['fold'].iloc[0]}" if (
            len(frame) and "kind" in frame and "fold" in frame) else str(m)
        good = check_predictions(frame, quarantine).assign(model=model)
        checked.append(good[[*PRED_COLUMNS, "model"]])
    if not checked or not sum(len(f) for f in checked):
        return _empty_blend()
    rows = pd.concat(checked, ignore_index=True)
    # Every model must agree on a key's box; a key whose geometry differs is quarantined.
    n_geom = rows.groupby(KEY, sort=False)[GEOMETRY].transform("nunique").max(axis=1)
    conflict = (n_geom > 1).to_numpy()
    _record(quarantine, rows[conflict], "box geometry differs between models")
    rows = rows[~conflict].reset_index(drop=True)
    if rows.empty:
        return _empty_blend()

    key_id, keys = pd.MultiIndex.from_frame(rows[KEY]).factorize()
    row, _rank, classes, logits = flatten(rows)
    cls_id, cls_names = pd.factorize(classes)
    kmin = np.full(len(rows), np.inf)
    np.minimum.at(kmin, row, logits)
    n_models = np.bincount(key_id, minlength=len(keys))
    floor_sum = np.bincount(key_id, weights=kmin, minlength=len(keys))
    # sum over models of logit(c) = sum of their k-th logits + sum over listing models
    # of (logit - k-th logit): the fill rule, without materialising the missing entries.
    long = pd.DataFrame({"key": key_id[row], "cls": cls_id, "delta": logits - kmin[row]})
    summed = long.groupby(["key", "cls"], sort=False)["delta"].sum().reset_index()
    k = summed["key"].to_numpy()
    summed["score"] = (floor_sum[k] + summed["delta"].to_numpy()) / n_models[k]
    summed = summed.sort_values(["key", "score"], ascending=[True, False], kind="stable")
    if top_k is not None:
        summed = summed[summed.groupby("key").cumcount() < top_k]
    counts = np.bincount(summed["key"].to_numpy(), minlength=len(keys))
    first = rows.groupby(key_id, sort=True)[GEOMETRY].first()
    out = pd.DataFrame({
        "image_id": keys.get_level_values(0).astype(str),
        "box_id": keys.get_level_values(1).astype(np.int32),
        **{g: first[g].to_numpy(np.int32) for g in GEOMETRY},
        "classes": list_column(np.asarray(cls_names, dtype=object)[summed["cls"].to_numpy()],
                               counts, pa.string()),
        "logits": list_column(summed["score"].to_numpy(np.float32), counts, pa.float32()),
        "n_models": n_models.astype(np.int32),
    })
    return out.sort_values(KEY, kind="stable").reset_index(drop=True)


def _empty_blend() -> pd.DataFrame:
    import pyarrow as pa

    return pd.DataFrame({
        "image_id": pd.Series(dtype=str), "box_id": pd.Series(dtype=np.int32),
        **{g: pd.Series(dtype=np.int32) for g in GEOMETRY},
        "classes": list_column(np.array([], object), np.array([], int), pa.string()),
        "logits": list_column(np.array([], np.float32), np.array([], int), pa.float32()),
        "n_models": pd.Series(dtype=np.int32),
    })


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


def shift_seg_fp(frame: pd.DataFrame, shift: float) -> pd.DataFrame:
    """``frame`` (predictions or a blend) with each box's ``seg_fp`` logit lowered by
    ``shift``, its top-k sorted again; a box without ``seg_fp`` in its top-k is unchanged.

    Lowering one class's logit by a constant moves its softmax log-odds against every
    other class by that constant: a prior correction for books on which the classifiers
    call ``seg_fp`` more often than on those they were trained on.
    """
    return shift_classes(frame, {SEG_FP: -shift}) if shift else frame


def shift_classes(frame: pd.DataFrame, shift: Mapping[str, float]) -> pd.DataFrame:
    """``frame`` (predictions or a blend) with ``shift[c]`` added to each class ``c``'s
    logit, its top-k sorted again. Adding a constant to one class's logit moves its
    softmax log-odds against every other class by that constant: a prior correction."""
    if not shift or frame.empty:
        return frame
    row, _rank, classes, logits = flatten(frame)
    added = pd.Series(classes).map(dict(shift)).fillna(0.0).to_numpy(np.float64)
    return with_top_k(frame, row, classes, logits + added)


def shift_books(frame: pd.DataFrame, shifts: Mapping[str, Mapping[str, float]]
                ) -> pd.DataFrame:
    """``frame`` with each book's class shifts (``{book: {code: shift}}``, as
    :func:`fit_class_shift` fits them) added to the logits of its pages' boxes."""
    from kzjobs.data.books import book_id

    if not shifts or frame.empty:
        return frame
    frame = frame.reset_index(drop=True)
    books = frame["image_id"].map(book_id)
    parts = [shift_classes(part, shifts.get(book, {})) for book, part in frame.groupby(books)]
    return pd.concat(parts).sort_index()


def script_of(codes: Iterable[str]) -> np.ndarray:
    """Per code: 0 for kana (``U+3040``-``U+30FF``), 1 for any other character."""
    from kzjobs.data.format import code_to_char, is_code_point

    def kana(code: str) -> bool:
        return is_code_point(code) and 0x3040 <= ord(code_to_char(code)) <= 0x30FF

    return np.array([0 if kana(str(c)) else 1 for c in codes], dtype=np.int64)


def class_shares(blended: pd.DataFrame) -> pd.Series:
    """Each character class's share of a blend's winners within its script (``seg_fp``
    left out): how often the models call each class on the books they know (their OOF
    pages), the target of :func:`fit_class_shift`."""
    winner = top_two(blended)[0]
    counts = pd.Series(winner[winner != SEG_FP]).value_counts()
    return counts / counts.groupby(script_of(counts.index)).transform("sum").to_numpy()


def fit_class_shift(blended: pd.DataFrame, shares: pd.Series, *, max_shift: float = 3.0,
                    min_expected: float = 10.0, steps: int = 200, rate: float = 0.5
                    ) -> dict[str, float]:
    """Per-class logit shifts (at most ``max_shift`` either way) under which a blend's
    expected class counts (a softmax over each box's top-k) come to ``shares`` within
    each script: no labels needed.

    Fitted on one book, it undoes an unfamiliar hand's systematic misreadings: where
    the models read most of a book's ``せ`` as ``ぜ``, ``ぜ`` is called far more often
    than on the books they know, and its shift moves the least sure of those calls back
    to the second choice. Shares are matched within a script because books differ in
    how much kana they write far more than in which kana. A count within two Poisson
    standard deviations of its expectation is taken as chance and left as it is, and
    classes neither expected nor called ``min_expected`` times in the book are left
    alone: a rare class the hand makes the models call far more often than expected is
    pushed down like a common one (the bench's cursive hand has its る read as a small
    っ, expected a few times a book and called a hundred).
    """
    row, _rank, classes, logits = flatten(blended)
    codes, cls = np.unique(classes.astype(str), return_inverse=True)
    target = shares.reindex(codes).fillna(0.0).to_numpy()
    script = script_of(codes)
    char = codes != SEG_FP
    shift = np.zeros(len(codes))
    n = len(blended)

    def counts(shift: np.ndarray) -> np.ndarray:  # expected count of each class
        z = logits + shift[cls]
        top = np.full(n, -np.inf)
        np.maximum.at(top, row, z)
        e = np.exp(z - top[row])
        return np.bincount(cls, weights=e / np.bincount(row, weights=e, minlength=n)[row],
                           minlength=len(codes))

    # The classes to fit, chosen once; their shares are matched among themselves, so
    # the mass the book spreads over rare classes does not pull every common one up.
    got = counts(shift)
    mass = np.bincount(script[char], weights=got[char], minlength=2)
    fit = char & ((target * mass[script] >= min_expected) | (got >= min_expected))
    share = target / np.maximum(np.bincount(script[fit], weights=target[fit],
                                            minlength=2)[script], 1e-12)
    for _ in range(steps):
        got = counts(shift)
        expected = share * np.bincount(script[fit], weights=got[fit], minlength=2)[script]
        # Two Poisson standard deviations either way are chance, not the hand.
        slack = 2 * np.sqrt(expected)
        goal = np.clip(got, expected - slack, expected + slack)
        step = rate * (np.log(np.maximum(goal[fit], 0.5)) - np.log(np.maximum(got[fit], 0.5)))
        shift[fit] = np.clip(shift[fit] + step, -max_shift, max_shift)
    return {str(c): float(s) for c, s in zip(codes, shift, strict=True) if s}


def fit_book_shifts(blended: pd.DataFrame, shares: pd.Series, *, max_shift: float = 3.0,
                    min_expected: float = 10.0) -> dict[str, dict[str, float]]:
    """``{book: {code: shift}}``: :func:`fit_class_shift` on each book's boxes of a blend."""
    from kzjobs.data.books import book_id

    books = blended["image_id"].map(book_id)
    return {str(book): fit_class_shift(part.reset_index(drop=True), shares,
                                       max_shift=max_shift, min_expected=min_expected)
            for book, part in blended.groupby(books)}


def seg_fp_lead(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """``(seg_fp wins, lead)`` per box: whether ``seg_fp`` is the top class, and by how
    much it leads the best character (the shift that would make a tie; inf when
    ``seg_fp`` is the only class listed)."""
    winner, top, second = top_two(frame)
    wins = winner == SEG_FP
    return wins, np.where(wins, np.nan_to_num(top - second, nan=np.inf), 0.0)


def seg_fp_rate(blended: pd.DataFrame, within: float = np.inf) -> float:
    """The fraction of a blend's boxes that ``seg_fp`` wins, by at most ``within``."""
    wins, lead = seg_fp_lead(blended)
    return float((wins & (lead <= within)).mean()) if len(blended) else 0.0


def fit_seg_fp_shift(blended: pd.DataFrame, target_rate: float, max_shift: float) -> float:
    """The smallest shift (at most ``max_shift``) under which ``seg_fp`` wins by at most
    ``max_shift`` no more than ``target_rate`` of a blend's boxes (give or take chance).

    It needs no labels: ``target_rate`` is how often the same models make such calls on
    the books they know (``seg_fp_rate(oof_blend, within=max_shift)``). More of them on
    a new collection are taken as characters the models do not recognise in an
    unfamiliar hand. Calls won by more than ``max_shift`` are out of the shift's reach
    and out of the count: a collection with more seals or marks than the training's
    (confident ``seg_fp``) does not pull the shift up.
    """
    wins, lead = seg_fp_lead(blended)
    contested = np.sort(lead[wins & (lead <= max_shift)])[::-1]
    # Two Poisson standard deviations of slack over the expected count: a few more calls
    # than that on a small collection are chance, not an unfamiliar hand.
    expected = target_rate * len(lead)
    allowed = int(np.floor(expected + 2 * np.sqrt(expected)))
    if allowed >= len(contested):
        return 0.0
    # A tie stays with seg_fp, so the shift passes the (allowed+1)-th largest lead by a
    # hair (a thousandth of a logit, well above float32 rounding at these magnitudes).
    return min(float(contested[allowed]) + 1e-3, float(max_shift))


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
