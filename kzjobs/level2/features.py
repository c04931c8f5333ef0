"""Level-2 rows: one per (box, candidate class), with each kind's top-n as features.

For a box, the candidates are the union of every kind's top-n classes plus
``seg_fp``. Each candidate row holds, for every kind: the top-n classes (as integers
through the saved :class:`Vocabulary`), their scores, whether each is the candidate,
and the candidate's own score in that kind (filled like the blend: the kind's k-th
logit when the candidate is not in its top-k); then the candidate itself, its mean
score over kinds, and ``box_overlap``. A kind that has no prediction for a box gives
NaN features there (both boosters route missing values).

With ``size_features``, four more: the box's size on its page (log of its width and
height over the page's median box), and whether the candidate is a small kana or has a
voicing mark. The classifiers read a box through ``roi_align`` at a fixed output size, so
they cannot see that a box is small, and ``ぁ`` and ``あ`` differ mostly in size.

The training target of a row is whether its candidate is the box's true class, or
``seg_fp`` when the true class is not among the candidates: dropping such a box
costs one false negative, keeping it costs a false positive as well.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache

import numpy as np
import pandas as pd

from kzjobs.data.format import SEG_FP, code_to_char, is_code_point
from kzjobs.method.predictions import GEOMETRY, KEY, attach_truth, flatten

SEG_FP_ID = -1  # the seed encoded seg_fp as -1 too
UNKNOWN_ID = -2  # a code the vocabulary has not seen
NONE_ID = -3  # no class at this rank (a top-k shorter than top_n, or no prediction)


class Vocabulary:
    """Class codes to integer features: the index in the sorted code list.

    Saved as a JSON list next to the models, so the encoding is data, not a pickle.
    Sorting keeps neighbouring code points (a kana block) near each other for splits.
    """

    def __init__(self, codes: Iterable[str]) -> None:
        self.codes = tuple(sorted(set(codes) - {SEG_FP}))
        self._index = pd.Index(self.codes)

    @classmethod
    def from_frames(cls, frames: Iterable[pd.DataFrame]) -> Vocabulary:
        return cls(c for f in frames for c in set(flatten(f)[2]))

    def encode(self, values: np.ndarray) -> np.ndarray:
        values = np.asarray(values, dtype=object)
        ids = self._index.get_indexer(values).astype(np.int32)
        ids[ids < 0] = UNKNOWN_ID
        ids[values == SEG_FP] = SEG_FP_ID
        ids[pd.isna(values)] = NONE_ID
        return ids

    def __len__(self) -> int:
        return len(self.codes)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.codes == other.codes

    __hash__ = None  # type: ignore[assignment]


def box_overlap(boxes: pd.DataFrame) -> np.ndarray:
    """Per box: the largest intersection with another box of its page / that box's area.

    numpy broadcasting per page: torchvision.ops has IoU but no public pairwise
    intersection, and this needs no tensors. A page of n boxes costs n*n (1,200 boxes:
    1.4M pairs, a few ms).
    """
    out = np.zeros(len(boxes), np.float32)
    x0 = boxes["x"].to_numpy(np.float64)
    y0 = boxes["y"].to_numpy(np.float64)
    x1 = x0 + boxes["w"].to_numpy(np.float64)
    y1 = y0 + boxes["h"].to_numpy(np.float64)
    area = (x1 - x0) * (y1 - y0)
    for idx in boxes.groupby("image_id", sort=False).indices.values():
        if len(idx) < 2:
            continue
        iw = np.minimum(x1[idx, None], x1[None, idx]) - np.maximum(x0[idx, None], x0[None, idx])
        ih = np.minimum(y1[idx, None], y1[None, idx]) - np.maximum(y0[idx, None], y0[None, idx])
        ratio = np.clip(iw, 0, None) * np.clip(ih, 0, None) / area[None, idx]
        np.fill_diagonal(ratio, 0.0)
        out[idx] = ratio.max(axis=1)
    return out


def page_relative_size(boxes: pd.DataFrame) -> np.ndarray:
    """``(n, 2)``: log of each box's width and height over its page's median box.

    The median over every box of the page, characters and false positives alike, as at
    recognition: nothing here needs the truth.
    """
    size = np.log(np.maximum(boxes[["w", "h"]].to_numpy(np.float64), 1.0))
    median = pd.DataFrame(size).groupby(boxes["image_id"].to_numpy()).transform("median")
    return (size - median.to_numpy()).astype(np.float32)


def kana_marks(codes: np.ndarray) -> np.ndarray:
    """``(n, 2)`` per code: whether it is a small kana (``ぁ``, ``っ``, ``ヵ``...) and
    whether it carries a voicing mark (``が``, ``ぱ``, ``ゞ``...), from Unicode's names and
    decompositions: facts of the script, not learned from labels, so no fold's truth
    leaks in. Small kana make smaller boxes, voicing marks wider ones."""
    return np.array([_marks(c) for c in np.asarray(codes, dtype=object)], dtype=bool).reshape(-1, 2)


@cache
def _marks(code: object) -> tuple[bool, bool]:
    if not isinstance(code, str) or not is_code_point(code):
        return False, False
    char = code_to_char(code)
    small = unicodedata.name(char, "").startswith(("HIRAGANA LETTER SMALL",
                                                     "KATAKANA LETTER SMALL"))
    voiced = bool(set(unicodedata.normalize("NFD", char)) & {"\u3099", "\u309a"})
    return small, voiced


SIZE_FEATURES = ["box_log_w", "box_log_h", "cand_small", "cand_voiced"]


def feature_name(kind: str) -> str:
    """A kind's name as a feature-name prefix (LightGBM refuses some characters)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", kind)


def feature_names(kinds: Sequence[str], top_n: int, size_features: bool = False) -> list[str]:
    names = []
    for kind in kinds:
        k = feature_name(kind)
        for i in range(top_n):
            names += [f"{k}_top{i}_cls", f"{k}_top{i}_score", f"{k}_top{i}_is_cand"]
        names.append(f"{k}_cand_score")
    names += ["cand", "cand_mean_score", "box_overlap"]
    return names + SIZE_FEATURES if size_features else names


@dataclass
class Candidates:
    """``boxes``: one row per box (key, geometry, ``true`` when known). ``rows``: one per
    candidate (``box`` = row of ``boxes``, ``cand`` code, ``y`` when known). ``X``: the
    rows' features, columns ``names``."""

    boxes: pd.DataFrame
    rows: pd.DataFrame
    X: np.ndarray
    names: list[str]


def _union_boxes(per_kind: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    parts = [f[[*KEY, *GEOMETRY]] for f in per_kind.values()]
    boxes = pd.concat(parts, ignore_index=True).drop_duplicates()
    clash = boxes.duplicated(KEY, keep=False)
    if clash.any():
        first = boxes[clash].iloc[0]
        raise ValueError(
            f"{int(clash.sum())} boxes differ between kinds, e.g. {first['image_id']} box "
            f"{first['box_id']}: the kinds' predictions come from different box files"
        )
    return boxes.sort_values(KEY, kind="stable").reset_index(drop=True)


def build(per_kind: Mapping[str, pd.DataFrame], kinds: Sequence[str], vocab: Vocabulary,
          top_n: int, truth: pd.DataFrame | None = None,
          size_features: bool = False) -> Candidates:
    """Candidate rows for the boxes of ``per_kind`` (one blended frame per kind).

    ``kinds`` fixes the feature order (a model's kinds); a kind absent from
    ``per_kind`` raises. With ``truth`` (``image_id, box_id, true``, and the geometry
    if known: :func:`~kzjobs.method.predictions.truth_frame`), boxes gain ``true`` and rows the
    target ``y``; boxes without truth are left out. With ``size_features``, the rows also have
    the :data:`SIZE_FEATURES`.
    """
    if not kinds:
        raise ValueError("level 2 needs at least one kind")
    missing = [k for k in kinds if k not in per_kind]
    if missing:
        raise ValueError(f"no predictions of kind(s) {missing} (have {sorted(per_kind)})")
    boxes = _union_boxes({k: per_kind[k] for k in kinds})
    if truth is not None:
        # With its geometry, the truth is checked to describe the same boxes.
        boxes = (attach_truth(boxes, truth) if set(GEOMETRY) <= set(truth)
                 else boxes.merge(truth[[*KEY, "true"]], on=KEY, how="inner"))
    n = len(boxes)
    box_index = pd.MultiIndex.from_frame(boxes[KEY])

    tops, scores, longs, floors = [], [], [], []
    for kind in kinds:
        frame = per_kind[kind]
        at = box_index.get_indexer(pd.MultiIndex.from_frame(frame[KEY]))
        frame = frame[at >= 0]
        row, rank, classes, logits = flatten(frame)
        box = at[at >= 0][row]
        top = np.full((n, top_n), None, dtype=object)
        score = np.full((n, top_n), np.nan, dtype=np.float32)
        head = rank < top_n
        top[box[head], rank[head]] = classes[head]
        score[box[head], rank[head]] = logits[head]
        floor = np.full(n, np.inf)
        np.minimum.at(floor, box, logits)
        floor[np.isinf(floor)] = np.nan  # the kind has no prediction for the box
        tops.append(top)
        scores.append(score)
        longs.append(pd.DataFrame({"box": box, "cand": classes, "logit": logits}))
        floors.append(floor)

    # Candidates: every kind's top-n, plus seg_fp for every box.
    heads = [pd.DataFrame({"box": np.repeat(np.arange(n), top_n), "cand": t.ravel()})
             for t in tops]
    rows = pd.concat([*heads, pd.DataFrame({"box": np.arange(n), "cand": SEG_FP})])
    rows = (rows.dropna().drop_duplicates().sort_values(["box", "cand"], kind="stable")
            .reset_index(drop=True))
    box = rows["box"].to_numpy()
    cand = rows["cand"].to_numpy(dtype=object)

    columns: list[np.ndarray] = []
    cand_scores = []
    for top, score, long, floor in zip(tops, scores, longs, floors, strict=True):
        codes = vocab.encode(top.ravel()).reshape(top.shape)
        for i in range(top_n):
            columns += [codes[box, i], score[box, i], (top[box, i] == cand)]
        own = rows.merge(long, on=["box", "cand"], how="left")["logit"].to_numpy(np.float64)
        own = np.where(np.isnan(own), floor[box], own)
        cand_scores.append(own)
        columns.append(own)
    # Every box comes from at least one kind, so no row is all NaN.
    mean_score = np.nanmean(np.stack(cand_scores), axis=0)
    columns += [vocab.encode(cand), mean_score, box_overlap(boxes)[box]]
    if size_features:
        size = page_relative_size(boxes)[box]
        columns += [size[:, 0], size[:, 1], *kana_marks(cand).T]
    X = np.column_stack([np.asarray(c, dtype=np.float32) for c in columns])

    if truth is not None:
        true = boxes["true"].to_numpy(dtype=object)
        listed = pd.Series(cand == true[box]).groupby(box).any().reindex(range(n), fill_value=False)
        target = np.where(listed.to_numpy(), true, SEG_FP)
        rows["y"] = cand == target[box]
    return Candidates(boxes=boxes, rows=rows, X=X,
                      names=feature_names(kinds, top_n, size_features))


def winners(boxes: pd.DataFrame, rows: pd.DataFrame, prob: np.ndarray,
            threshold: float | None = None) -> pd.DataFrame:
    """Per box, the winning candidate: ``boxes`` with ``code`` and its ``prob``.

    ``rows`` are candidate rows (``box`` = row of ``boxes``, ``cand``), ``prob`` theirs.
    The most probable candidate wins, ``seg_fp`` included; with ``threshold``, the best
    character also wins when its probability reaches it (see :func:`fit_threshold`).
    """
    box = rows["box"].to_numpy()
    rank = prob
    if threshold is not None:  # seg_fp competes at most at the threshold
        rank = np.where(rows["cand"].to_numpy() == SEG_FP, np.minimum(prob, threshold), prob)
    order = np.lexsort((-rank, box))
    # Every box has a seg_fp row, so the first row of each box, in box order, is its winner.
    first = order[np.r_[True, box[order][1:] != box[order][:-1]]] if len(order) else order
    out = boxes.copy()
    out["code"] = rows["cand"].to_numpy()[first]
    out["prob"] = prob[first].astype(np.float32)
    return out


# Candidate thresholds of fit_threshold: coarse, so one number is all that is fitted.
THRESHOLDS = tuple(round(t, 2) for t in np.arange(0.05, 0.5, 0.05))


def fit_threshold(boxes: pd.DataFrame, rows: pd.DataFrame, prob: np.ndarray,
                  true: np.ndarray) -> tuple[float | None, float]:
    """The probability at which a character is kept even when ``seg_fp`` is likelier,
    fitted to the box-level F1 of OOF rows; None when no threshold beats plain argmax.

    A wrong character costs a false positive and a false negative, a dropped box only
    the false negative: when the classifiers are weak, level 2 rightly finds ``seg_fp``
    likelier than any character on many boxes, yet keeping the best one still pays
    (the F1-best cut is about half the F1 reached). Returns ``(threshold, box F1)``.
    """
    best = (None, box_f1(true, winners(boxes, rows, prob)["code"].to_numpy(dtype=object)))
    for t in THRESHOLDS:
        f1 = box_f1(true, winners(boxes, rows, prob, t)["code"].to_numpy(dtype=object))
        if f1 > best[1]:
            best = (t, f1)
    return best


def box_f1(true: np.ndarray, pred: np.ndarray) -> float:
    """Box-level F1: a kept box is a TP when right, else a FP; a character box that is not
    predicted right is a FN (the detector's misses are not counted)."""
    right = true == pred
    char = true != SEG_FP
    tp = int((right & char).sum())
    fp = int(((pred != SEG_FP) & ~right).sum())
    fn = int((char & ~right).sum())
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
