"""Blend classifier predictions: average each class's logit over models, joined by box
(the prediction files of :mod:`kzjobs.method.predictions`).

**A class missing from a model's top-k** gets that model's k-th (lowest listed) logit
for the box, as the seed's blend did. The class's real logit is at most that value, so
it is the tightest bound the file holds; a fixed floor (or zero) would punish a class
the model merely ranked k+1 as hard as one it ruled out.

A box blended from several models takes the mean over the models that predicted it
(``n_models``). Rows a model's file cannot vouch for, and boxes whose geometry differs
between models, are quarantined; the rest of the batch goes on.

This module imports pandas at the top: import it inside functions from CLI code.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from kzjobs.core.quarantine import Quarantined
from kzjobs.method.predictions import (
    GEOMETRY,
    KEY,
    PRED_COLUMNS,
    check_predictions,
    flatten,
    list_column,
    record_bad_rows,
)


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
    record_bad_rows(quarantine, rows[conflict], "box geometry differs between models")
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
