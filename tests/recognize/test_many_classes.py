"""Thousands of classes: a classifier, level 2, a bundle and recognition at the size of kana +
Jōyō (2,312 classes) and beyond the real data's (4,212 + ``seg_fp``), with seeded weights.

Nothing here may grow with the class count but the classifier's last layer and the
vocabulary: level 2 stacks each box's top-n candidates, prediction files keep a top-k.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench.workload import seeded_vocabulary, write_seeded_bundle
from kzjobs.core.store import open_store
from kzjobs.level2.features import Vocabulary, build
from kzjobs.level2.model import per_kind
from kzjobs.recognize.job import RecognizeJob
from kzjobs.synth import generate

SIZES = (2_312, 5_001)


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    """Two small unlabelled pages, shared by every size."""
    store = open_store(tmp_path_factory.mktemp("pages"))
    generate(store.child("coll"), books=1, pages_per_book=2, seed=3, fonts=["ipaex-mincho"],
             labelled=False)
    return store


@pytest.mark.parametrize("classes", SIZES)
def test_a_bundle_with_level2_reads_pages_end_to_end(pages, tmp_path, classes):
    from kzjobs.recognize.recognizer import Recognizer
    from kzjobs.release.bundle import Bundle

    store = open_store(tmp_path)
    for key in pages.list("coll"):
        store.write_bytes(key, pages.read_bytes(key))
    write_seeded_bundle(store, "model", classes=classes, level2=True)
    bundle = Bundle.load(store.child("model"))
    assert len(store.read_json("model/vocabulary.json")) == classes - 1  # seg_fp apart

    summary = RecognizeJob(store_uri=str(tmp_path), profile_name="tiny", collection="coll",
                           out="out", model="model", progress=False).run()
    merged = summary["merge"]
    assert merged["recognized"] == 2 and merged["quarantined"] == 0 and merged["characters"]
    # Level 2 decided, not the blend's top class.
    rec = Recognizer.from_bundle(bundle, store.child("model"))
    assert rec.level2 is not None and len(rec.level2.vocab) == classes - 1


@pytest.mark.parametrize("classes", SIZES)
def test_a_classifier_keeps_its_top_k_whatever_its_class_count(classes):
    import torch

    from kzjobs.classify.model import build_model, model_args
    from kzjobs.classify.predict import page_table, predict_logits, table_bytes
    from kzjobs.core.profile import load_profile
    from kzjobs.data.format import Box

    cfg = load_profile("tiny").classify
    vocab = seeded_vocabulary(classes)
    torch.manual_seed(0)
    model = build_model(model_args(cfg.kinds[0], len(vocab), cfg)).eval()
    assert model.head[-1].out_features == classes
    image = np.full((200, 160, 3), 255, np.uint8)
    boxes = [Box("unk", 10 + 30 * i, 20, 24, 26) for i in range(4)]
    logits = predict_logits(model, image, boxes, cfg, device=torch.device("cpu"))
    assert logits.shape == (4, classes)
    table = page_table("p_001", boxes, logits, vocab, top_k=cfg.top_k, kind="k", fold=0)
    assert all(len(row) == cfg.top_k for row in table.column("classes").to_pylist())
    # The parquet file holds a top-k per box, not a column or a row per class.
    assert table.num_columns == 10 and len(table_bytes(table)) < 20_000


def top_k_frame(kind: str, codes: list[str], step: int, boxes: int = 60) -> pd.DataFrame:
    """A kind's top 10 for ``boxes`` boxes on 3 pages: box j ranks the codes j*7, j*7 +
    step, j*7 + 2*step... (modulo the class count) first, the same pattern at any count."""
    rows = []
    for j in range(boxes):
        top = [codes[(7 * j + step * r) % len(codes)] for r in range(10)]
        rows.append((f"bk_{j % 3:03d}", j, 10 * j, 0, 10, 10, top,
                     np.linspace(5, 1, 10, dtype=np.float32)))
    frame = pd.DataFrame(rows, columns=["image_id", "box_id", "x", "y", "w", "h", "classes",
                                        "logits"])
    return frame.astype({c: np.int32 for c in ("box_id", "x", "y", "w", "h")}).assign(
        kind=kind, fold=0)


def candidate_rows(classes: int) -> tuple[int, int]:
    """(rows, feature columns) of level 2 for the same 60 boxes over ``classes`` classes."""
    codes = seeded_vocabulary(classes)[:-1]
    blended = per_kind([top_k_frame("a", codes, 1), top_k_frame("b", codes, 2)])
    cands = build(blended, ["a", "b"], Vocabulary(codes), top_n=3)
    assert cands.X.shape == (len(cands.rows), len(cands.names))
    return cands.X.shape


def test_level2_rows_do_not_grow_with_the_class_count():
    # Per box: the union of both kinds' top 3 (j*7 + {0, 1, 2} and + {0, 2, 4}) and seg_fp.
    assert candidate_rows(50) == candidate_rows(5_000) == (60 * 5, 2 * (3 * 3 + 1) + 3)
