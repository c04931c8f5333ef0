"""The store key layout of a training run: every job that writes or reads a run's files
names them here, so the plan, the jobs and the bundle cannot disagree.

Under ``<run>`` (``runs/retrain/<run id>`` in a DAG run; the run prefix is the bundle root)::

    folds.json                              books -> fold
    validation/                             the validation job's report and quarantine
    detect/fold<K>/model.pt, oof.csv        a detector per fold, its OOF boxes with truth
    oof_boxes.csv                           every fold's OOF boxes (not under detect/)
    classify/<kind>/fold<K>/model.pt, oof.parquet, oof.quarantine.json
    incoming/<collection>/boxes.csv, preds/<kind>-fold<K>.parquet
    pseudo/labels.csv, labels.json          pseudolabels and their report
    level2/fold<K>/lgb.txt, xgb.ubj; level2/meta.json, vocab.json, report.json
    vocabulary.json, bundle.json            the bundle's manifest and vocabulary
    evaluation.json                         the held-out evaluation

Light: no heavy imports, so the plan (and the DAG files through it) can use it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kzjobs.core.store import join

DETECT = "detect"
CLASSIFY = "classify"
LEVEL2 = "level2"
MODEL = "model.pt"
DETECT_OOF = "oof.csv"
CLASSIFY_OOF = "oof.parquet"


def safe_run_id(run_id: str) -> str:
    """An Airflow run id as one store-key part (``manual__2026-01-01T00:00:00+00:00``)."""
    return re.sub(r"[^A-Za-z0-9._=+@-]", "-", run_id).strip("-.") or "run"


def collection_name(collection: str) -> str:
    """A collection's key (or URI) as one store-key part."""
    return safe_run_id(collection.strip("/").replace("/", "-"))


def finetuned(kind: str) -> str:
    """The name of a classifier kind once fine-tuned on pseudolabels."""
    return f"{kind}-ft"


def retrain_run(run_id: str) -> str:
    """The prefix of a retraining DAG run."""
    return join("runs", "retrain", safe_run_id(run_id))


def recognize_run(collection: str, run_id: str) -> str:
    """The prefix of a recognition DAG run (its validation lives under it)."""
    return join("runs", "recognize", collection_name(collection), safe_run_id(run_id))


@dataclass(frozen=True)
class Level2Keys:
    """A level-2 model's files under its prefix (``<run>/level2`` in a run)."""

    prefix: str

    def lightgbm(self, fold: int) -> str:
        return join(self.prefix, f"fold{fold}", "lgb.txt")

    def xgboost(self, fold: int) -> str:
        return join(self.prefix, f"fold{fold}", "xgb.ubj")

    @property
    def meta(self) -> str:
        return join(self.prefix, "meta.json")  # written last: the model is complete

    @property
    def vocab(self) -> str:
        return join(self.prefix, "vocab.json")

    @property
    def report(self) -> str:
        return join(self.prefix, "report.json")

    @property
    def oof(self) -> str:
        return join(self.prefix, "oof.parquet")

    @property
    def quarantine(self) -> str:
        return join(self.prefix, "quarantine.json")


@dataclass(frozen=True)
class RunKeys:
    """The keys of one training run. ``RunKeys("")`` gives them relative to the run
    prefix, as the bundle manifest names its files."""

    run: str

    def key(self, *parts: str) -> str:
        return join(self.run, *parts)

    @property
    def folds(self) -> str:
        return self.key("folds.json")

    @property
    def validation(self) -> str:
        return self.key("validation")

    @property
    def detect_root(self) -> str:
        return self.key(DETECT)

    def detect_fold(self, fold: int) -> str:
        return self.key(DETECT, f"fold{fold}")

    def detector(self, fold: int) -> str:
        return join(self.detect_fold(fold), MODEL)

    def detect_oof(self, fold: int) -> str:
        return join(self.detect_fold(fold), DETECT_OOF)

    @property
    def oof_boxes(self) -> str:
        # Not under detect/: level 2 reads every detect/fold*/oof.csv there as truth.
        return self.key("oof_boxes.csv")

    @property
    def classify_root(self) -> str:
        return self.key(CLASSIFY)

    def classify(self, kind: str, fold: int) -> str:
        return self.key(CLASSIFY, kind, f"fold{fold}")

    def classifier(self, kind: str, fold: int) -> str:
        return join(self.classify(kind, fold), MODEL)

    def incoming(self, collection: str) -> str:
        return self.key("incoming", collection_name(collection))

    def incoming_boxes(self, collection: str) -> str:
        return join(self.incoming(collection), "boxes.csv")

    def incoming_preds(self, collection: str, kind: str, fold: int) -> str:
        return join(self.incoming(collection), "preds", f"{kind}-fold{fold}.parquet")

    @property
    def pseudo_labels(self) -> str:
        return self.key("pseudo", "labels.csv")

    @property
    def pseudo_report(self) -> str:
        # The pseudolabel job's default report key: beside its labels. It holds the
        # seg_fp and class shifts the bundle carries.
        return self.key("pseudo", "labels.json")

    @property
    def level2(self) -> Level2Keys:
        return Level2Keys(self.key(LEVEL2))

    @property
    def vocabulary(self) -> str:
        return self.key("vocabulary.json")

    @property
    def bundle(self) -> str:
        return self.run  # the run prefix is the bundle root (bundle.json lives there)

    @property
    def evaluation(self) -> str:
        return self.key("evaluation.json")


def classify_fold_kind(key: str) -> str:
    """The kind of a ``.../classify/<kind>/fold<K>/<file>`` key."""
    return key.split("/")[-3]
