"""Recognition workloads for benchmarks and tests: a seeded blend and a synthetic collection.

The blend is real (a detector, a classifier, a vocabulary, saved as a bundle) but its
weights are seeded and untrained: recognition does its full work, outputs are the same on
every run, and building one takes seconds. Learning is measured elsewhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kzjobs.store import Store

VOCAB = ["U+3042", "U+3044", "seg_fp"]


def write_seeded_bundle(store: Store, prefix: str = "model", *, profile: str = "tiny",
                        seed: int = 0, propose_all: bool = True, folds: int = 1) -> str:
    """Write a bundle (detector, one classifier per fold, vocabulary) under ``prefix``.

    ``profile`` is a profile name or YAML path. With ``propose_all`` the detector's score
    threshold is 0, so that an untrained model still proposes boxes.
    """
    import torch

    from kzjobs.bundle import Bundle
    from kzjobs.checkpoint import save_to_store
    from kzjobs.classify.model import build_model, model_args
    from kzjobs.detect.model import build_detector
    from kzjobs.profile import load_profile

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
    args = model_args(kind, len(VOCAB), loaded.classify)
    classifiers = ["classify.pt", *(f"classify-fold{fold}.pt" for fold in range(1, folds))]
    for fold, key in enumerate(classifiers):
        save_to_store(root, key, {"model_args": args, "model": build_model(args).state_dict(),
                                  "vocabulary": VOCAB, "kind": kind, "fold": fold})
    root.write_json("vocabulary.json", {"U+3042": "あ", "U+3044": "い"})
    Bundle(profile=loaded.name, profile_data=loaded.model_dump(mode="json", by_alias=True),
           detector=["detect.pt"], classifiers={kind: classifiers},
           vocabulary="vocabulary.json").save(root)
    return prefix


def write_workload(store_root: Path | str, *, books: int, pages_per_book: int, seed: int = 3,
                   collection: str = "coll", model: str = "model",
                   **bundle: Any) -> list[str]:
    """An unlabelled synthetic collection and a seeded blend; returns the page ids."""
    from kzjobs.data.dataset import Dataset
    from kzjobs.store import open_store
    from kzjobs.synth import generate

    store = open_store(store_root)
    generate(store.child(collection), books=books, pages_per_book=pages_per_book, seed=seed,
             fonts=["ipaex-mincho"], labelled=False)
    write_seeded_bundle(store, model, **bundle)
    return sorted(Dataset.open(collection, store).image_ids())
