"""Evaluation of a whole blend on held-out books: the competition F1, overall and per book.

The summary names the held-out set by its content digest, so the registry and the
promotion can tell whether two evaluations were on the same books.
"""

from __future__ import annotations

from typing import Any

from kzjobs.bundle import open_bundle
from kzjobs.data.dataset import Dataset
from kzjobs.job import Job
from kzjobs.store import Store


def evaluate_model(model: str, dataset: str, store: Store) -> dict[str, Any]:
    """Recognize every page of a labelled dataset with ``model`` and score it."""
    from kzjobs.registry import dataset_version

    bundle, root = open_bundle(model, store)
    if missing := bundle.missing(root):  # before any heavy work: a broken blend fails here
        raise FileNotFoundError(f"bundle {root.uri} lacks {missing}")
    ds = Dataset.open(dataset, store)
    if not ds.labelled:
        raise ValueError(f"held-out dataset {dataset!r} has no train.csv")

    from kzjobs.metric import score
    from kzjobs.recognize.recognizer import Recognizer

    recognizer = Recognizer.from_bundle(bundle, root)
    preds = {i: recognizer.recognize_page(i, ds.read_image(i)).points() for i in ds.image_ids()}
    result = score(ds.annotations, preds).as_dict(by_book=True)
    return {"model": model, "dataset": dataset, "dataset_version": dataset_version(ds), **result}


class EvaluateJob(Job):
    model: str  # a bundle root key or a models:/ URI
    dataset: str  # a labelled held-out dataset
    out: str = ""  # store key of the summary JSON

    def run(self) -> dict[str, Any]:
        if self.out and self.store.exists(self.out):
            done = self.store.read_json(self.out)
            if done.get("model") == self.model and done.get("dataset") == self.dataset:
                return done | {"skipped": "evaluation exists"}
        summary = evaluate_model(self.model, self.dataset, self.store)
        if self.out:
            self.store.write_json(self.out, summary)
        return summary | {"out": self.out}
