"""Evaluation of a whole blend on held-out books: the competition F1, overall and per book.

The pages are read by the recognition job itself (resumable per page, bad pages
quarantined, which then count as missed characters), and its ``submission.csv`` is
scored against the labels. The summary names the held-out set by its content digest,
so the registry and the promotion can tell whether two evaluations were on the same
books.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from kzjobs.core.job import Job
from kzjobs.core.store import Store, join
from kzjobs.data.dataset import Dataset
from kzjobs.release.model_ref import open_bundle


def evaluate_model(
    model: str, dataset: str, store: Store, *, out: str, profile: str | None,
    adapt: bool | None = None,
) -> dict[str, Any]:
    """Recognize every page of a labelled dataset with ``model`` into ``out`` and score it
    (``profile`` and ``adapt`` as ``kzjobs recognize`` takes them)."""
    from kzjobs.data.format import read_submission
    from kzjobs.method.metric import score
    from kzjobs.recognize.job import RecognizeJob
    from kzjobs.release.registry import dataset_version

    bundle, root = open_bundle(model, store)
    if missing := bundle.missing(root):  # before any heavy work: a broken blend fails here
        raise FileNotFoundError(f"bundle {root.uri} lacks {missing}")
    ds = Dataset.open(dataset, store)
    if not ds.labelled:
        raise ValueError(f"held-out dataset {dataset!r} has no train.csv")
    recognized = RecognizeJob(store_uri=store.uri, profile_name=profile, model=model,
                              collection=dataset, out=out, adapt=adapt, progress=False).run()
    preds = read_submission(store.read_bytes(join(out, "submission.csv")))
    result = score(ds.annotations, preds).as_dict(by_book=True)
    # Where the errors are: boxes missed or spurious (detection), or wrongly named.
    detection = score(ds.annotations, preds, ignore_code=True)
    return {"model": model, "dataset": dataset, "dataset_version": dataset_version(ds),
            "predictions": out, "quarantined": recognized["merge"]["quarantined"], **result,
            "detection_f1": detection.f1,
            "detection_f1_by_book": {b: c.f1 for b, c in detection.by_book.items()}}


class EvaluateJob(Job):
    model: str = Field(description="Bundle key/path or models:/kz-recognizer@alias.")
    dataset: str = Field(description="Labelled held-out dataset.")
    out: str = Field(description="Store key of the evaluation JSON.")
    predictions: str = Field(
        "", description="Store prefix of the recognition outputs; default: beside --out.")

    def run(self) -> dict[str, Any]:
        if self.store.exists(self.out):
            done = self.store.read_json(self.out)
            if done.get("model") == self.model and done.get("dataset") == self.dataset:
                return done | {"skipped": "evaluation exists"}
        predictions = self.predictions or self.out.rsplit(".", 1)[0]
        summary = evaluate_model(self.model, self.dataset, self.store, out=predictions,
                                 profile=self.profile_name)
        self.store.write_json(self.out, summary)  # last: a re-run skips a finished job
        return summary | {"out": self.out}
