"""Level-2 jobs: train on a run's OOF predictions; predict the boxes of a page set.

Store layout (under a run prefix)::

    classify/<kind>/fold{K}/oof.parquet   classifier OOF predictions (input)
    detect/fold{K}/oof.csv                detector OOF boxes with their truth (input)
    level2/fold{K}/lgb.txt, xgb.ubj       boosters (written fold by fold)
    level2/vocab.json, meta.json          the model (meta.json last)
    level2/report.json, oof.parquet       OOF figures, per-box OOF winners
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from pydantic import Field

from kzjobs.core.job import Cli, Job
from kzjobs.core.keys import Level2Keys, RunKeys
from kzjobs.core.quarantine import Quarantined, beside, write_quarantine

log = logging.getLogger(__name__)


class Level2TrainJob(Job):
    run_prefix: Annotated[str, Cli(("--run",))] = Field(
        description="Training run prefix (classify/ and detect/ OOF).")
    out: str = Field("", description="Model prefix; default <run>/level2.")
    dataset: str = Field(
        "", description="Labelled dataset key: its vocabulary, and the competition F1.")
    kinds: Annotated[list[str], Cli(("--kind",))] = Field(
        default_factory=list,
        description="Classifier kinds to use (repeatable); default: all in the run.")

    @property
    def prefix(self) -> str:
        return self.out or RunKeys(self.run_prefix).level2.prefix

    def run(self) -> dict[str, Any]:
        from kzjobs.level2.features import Vocabulary
        from kzjobs.level2.train import train
        from kzjobs.method.predictions import load_oof

        keys = Level2Keys(self.prefix)
        report_key = keys.report
        if self.store.exists(keys.meta) and self.store.exists(report_key):
            return self.store.read_json(report_key) | {"skipped": True}
        frames, truth = load_oof(self.store, self.run_prefix, self.kinds or None)
        pages, vocab = None, None
        if self.dataset:
            from kzjobs.data.dataset import Dataset

            ds = Dataset.open(self.dataset, self.store)
            pages = ds.annotations
            codes = {b.code for boxes in pages.values() for b in boxes}
            if ds.store.exists("unicode_translation.csv"):
                codes |= set(ds.vocabulary)
            vocab = Vocabulary(codes)
        quarantine: list[Quarantined] = []
        result = train(frames, truth, self.profile.level2, kinds=self.kinds or None, vocab=vocab,
                       store=self.store, prefix=self.prefix, pages=pages, quarantine=quarantine)
        _write_parquet(self.store, keys.oof, result.boxes)
        result.model.save(self.store, self.prefix)
        report = result.report | {"model": self.prefix, "quarantined": len(quarantine)}
        if quarantine:
            report["quarantine"] = keys.quarantine
            write_quarantine(self.store, keys.quarantine, quarantine)
        self.store.write_json(report_key, report)
        return report


class Level2PredictJob(Job):
    model: str = Field(description="Level-2 model prefix (holds meta.json).")
    preds: list[str] = Field(description="Prediction parquet key or prefix (repeatable): all "
                             "kinds and folds of the model.")
    out: str = Field(description="Store key of the per-box winners (parquet).")
    submission: str = Field("", description="Also write a submission CSV (box centres) here.")

    def run(self) -> dict[str, Any]:
        from kzjobs.data.format import write_submission
        from kzjobs.level2.model import Level2Model, points, predict
        from kzjobs.method.predictions import load_predictions

        if self.store.exists(self.out):  # written last
            return {"out": self.out, "submission": self.submission, "skipped": True}
        model = Level2Model.load(self.store, self.model)
        quarantine: list[Quarantined] = []
        frames = load_predictions(self.store, self.preds, quarantine)
        result = predict(frames, model, quarantine=quarantine)
        seen = {(i, b) for f in frames for i, b in zip(f["image_id"], f["box_id"], strict=True)}
        summary: dict[str, Any] = {
            "out": self.out, "boxes": len(seen), "kept": len(result),
            "pages": len({i for i, _ in seen}), "quarantined": len(quarantine),
        }
        if quarantine:
            summary["quarantine"] = beside(self.out)
            write_quarantine(self.store, summary["quarantine"], quarantine)
        if self.submission:
            # Every page seen appears, with no points when level 2 dropped all its boxes.
            pages = {i: [] for i in sorted({i for i, _ in seen})} | points(result)
            self.store.write_bytes(self.submission, write_submission(pages))
            summary["submission"] = self.submission
        _write_parquet(self.store, self.out, result)  # last: a re-run skips a finished job
        return summary


def _write_parquet(store: Any, key: str, frame: Any) -> None:
    import io

    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    store.write_bytes(key, buf.getvalue())
