"""Recognition workloads for benchmarks and tests: a seeded blend and a synthetic collection.

The blend is real (a detector, a classifier, a vocabulary, saved as a bundle) but its
weights are seeded and untrained: recognition does its full work, outputs are the same on
every run, and building one takes seconds. Learning is measured elsewhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kzjobs.core.store import Store
from kzjobs.data.format import code_to_char
from kzjobs.release.bundle import Level2Files

VOCAB = ["U+3042", "U+3044", "seg_fp"]


def seeded_vocabulary(classes: int) -> list[str]:
    """``classes`` (3 or more) class codes, ``seg_fp`` last: あ and い, then CJK code points
    from U+4E00 (the level-2 simulation's codes)."""
    from kzjobs.level2.simulate import codes

    return [*VOCAB[:-1], *codes(max(0, classes - len(VOCAB))), "seg_fp"]


def write_seeded_bundle(store: Store, prefix: str = "model", *, profile: str = "tiny",
                        seed: int = 0, propose_all: bool = True, folds: int = 1,
                        classes: int = len(VOCAB), level2: bool = False) -> str:
    """Write a bundle (detector, one classifier per fold, vocabulary) under ``prefix``.

    ``profile`` is a profile name or YAML path. With ``propose_all`` the detector's score
    threshold is 0, so that an untrained model still proposes boxes. ``classes``: the
    classifiers' class count, ``seg_fp`` included (:func:`seeded_vocabulary`). With
    ``level2``, a level 2 fitted in seconds on simulated classifier outputs over the same
    classes (:func:`write_seeded_level2`) decides instead of the blend's top class.
    """
    import torch

    from kzjobs.classify.model import build_model, model_args
    from kzjobs.core.checkpoint import save_to_store
    from kzjobs.core.profile import load_profile
    from kzjobs.detect.model import build_detector
    from kzjobs.release.bundle import Bundle

    root = store.child(prefix)
    loaded = load_profile(profile)
    if propose_all:
        loaded = loaded.model_copy(update={"detect": loaded.detect.model_copy(
            update={"score_threshold": 0.0})})
    torch.manual_seed(seed)
    detector = build_detector(loaded.detect, load_weights=False)
    save_to_store(root, "detect.pt", {"config": loaded.detect.model_dump(mode="json"),
                                      "model": detector.state_dict()})
    kind = loaded.classify.kinds[0]
    vocab = seeded_vocabulary(classes)
    args = model_args(kind, len(vocab), loaded.classify)
    classifiers = ["classify.pt", *(f"classify-fold{fold}.pt" for fold in range(1, folds))]
    for fold, key in enumerate(classifiers):
        save_to_store(root, key, {"model_args": args, "model": build_model(args).state_dict(),
                                  "vocabulary": vocab, "kind": kind, "fold": fold})
    root.write_json("vocabulary.json", {c: code_to_char(c) for c in vocab if c != "seg_fp"})
    files = write_seeded_level2(root, kind, vocab, seed=seed) if level2 else Level2Files()
    # A profile that fits each book's class shifts at read time fits them to these.
    shares = seeded_shares(vocab) if loaded.pseudo.class_shift else {}
    Bundle(profile=loaded.name, profile_data=loaded.model_dump(mode="json", by_alias=True),
           detector=["detect.pt"], classifiers={kind: classifiers}, level2=files,
           vocabulary="vocabulary.json", class_shares=shares).save(root)
    return prefix


def seeded_shares(vocab: list[str]) -> dict[str, float]:
    """Zipf-like class shares within each script (kana, other), in ``vocab``'s order, as
    :func:`kzjobs.method.shifts.class_shares` gives them."""
    import numpy as np

    from kzjobs.method.shifts import script_of

    chars = [c for c in vocab if c != "seg_fp"]
    weight = 1 / np.arange(1, len(chars) + 1) ** 0.7
    script = script_of(chars)
    total = np.bincount(script, weights=weight)
    return {c: round(float(w / total[s]), 8) for c, w, s in zip(chars, weight, script,
                                                                  strict=True)}


def write_seeded_level2(root: Store, kind: str, vocab: list[str], *, seed: int = 0,
                        prefix: str = "level2") -> Level2Files:
    """A level 2 for classifiers of ``kind`` over ``vocab``, fitted (a few rounds, two folds)
    on simulated outputs of such classifiers, saved under ``prefix`` of ``root``."""
    from kzjobs.level2.config import Level2Config
    from kzjobs.level2.features import Vocabulary
    from kzjobs.level2.simulate import KindSpec, simulate
    from kzjobs.level2.train import train
    from kzjobs.method.predictions import truth_frame

    sim = simulate(books=4, pages_per_book=2, boxes_per_page=30, n_classes=len(vocab) - 1,
                   kinds=(KindSpec(kind),), seed=seed)
    cfg = Level2Config(lgb_rounds=10, xgb_rounds=10, threads=1)
    fitted = train(sim.oof(), truth_frame(sim.boxes), cfg, vocab=Vocabulary(vocab)).model
    fitted.save(root, prefix)
    return Level2Files(prefix=prefix, meta=f"{prefix}/meta.json",
                       vocabulary=f"{prefix}/vocab.json",
                       lightgbm=[f"{prefix}/fold{k}/lgb.txt" for k in fitted.folds],
                       xgboost=[f"{prefix}/fold{k}/xgb.ubj" for k in fitted.folds])


def write_workload(store_root: Path | str, *, books: int, pages_per_book: int, seed: int = 3,
                   collection: str = "coll", model: str = "model",
                   **bundle: Any) -> list[str]:
    """An unlabelled synthetic collection and a seeded blend; returns the page ids."""
    from kzjobs.core.store import open_store
    from kzjobs.data.dataset import Dataset
    from kzjobs.synth import generate

    store = open_store(store_root)
    generate(store.child(collection), books=books, pages_per_book=pages_per_book, seed=seed,
             fonts=["ipaex-mincho"], labelled=False)
    write_seeded_bundle(store, model, **bundle)
    return sorted(Dataset.open(collection, store).image_ids())
