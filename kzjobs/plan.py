"""What each DAG run does, as data: store keys and the ``kzjobs`` arguments of every job.

A DAG's first task builds a plan from its params and run id; every later task takes
its arguments from the plan, so tasks pass store keys, never data. Plans import no
Airflow and no heavy module, and are tested on their own.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from kzjobs.export import parse_formats
from kzjobs.pretrain.config import PRETRAINED
from kzjobs.profile import load_profile
from kzjobs.recognize import PAGES_PER_BATCH
from kzjobs.settings import get_settings
from kzjobs.store import join

# Assets (names and URIs): Airflow DAG files build ``Asset(name=..., uri=...)`` from these.
CANDIDATE_ASSET = ("kz_candidate", "kzjobs://registry/kz-recognizer/candidate")
# In a run: the pseudolabel job's labels, and its report beside them (the job's default
# report key), which holds the seg_fp shift the bundle carries.
PSEUDO_LABELS = "pseudo/labels.csv"
PSEUDO_REPORT = "pseudo/labels.json"
COLLECTION_ASSET = ("kz_incoming", "kzjobs://store/incoming")
PREDICTIONS_ASSET = ("kz_predictions", "kzjobs://store/predictions")


def champion_ref() -> str:
    return f"models:/{get_settings().registry_model}@champion"


def safe_run_id(run_id: str) -> str:
    """An Airflow run id as one store-key part (``manual__2026-01-01T00:00:00+00:00``)."""
    return re.sub(r"[^A-Za-z0-9._=+@-]", "-", run_id).strip("-.") or "run"


def collection_name(collection: str) -> str:
    return safe_run_id(collection.strip("/").replace("/", "-"))


def finetuned(kind: str) -> str:
    """The name of a classifier kind once fine-tuned on pseudolabels."""
    return f"{kind}-ft"


class RetrainPlan(BaseModel):
    """The keys and jobs of one retraining run, all under ``run``."""

    model_config = ConfigDict(extra="forbid")

    run: str
    profile: str
    dataset: str
    heldout: str
    incoming: list[str] = Field(default_factory=list)
    n_folds: int
    kinds: list[str]
    # Kinds whose pretrained starting weights (in the store) are missing or stale.
    pretrain: list[str] = Field(default_factory=list)

    @classmethod
    def build(cls, params: dict[str, Any], run_id: str) -> RetrainPlan:
        from kzjobs.pretrain.job import stale_kinds

        profile = load_profile(params["profile"])
        return cls(
            run=join("runs", "retrain", safe_run_id(run_id)),
            profile=params["profile"],
            dataset=params["dataset"],
            heldout=params["heldout"],
            incoming=[c for c in params.get("incoming") or [] if c],
            n_folds=profile.data.n_folds,
            kinds=list(profile.classify.kinds),
            pretrain=stale_kinds(params["profile"]),
        )

    # -- keys
    def key(self, *parts: str) -> str:
        return join(self.run, *parts)

    @property
    def folds_key(self) -> str:
        return self.key("folds.json")

    def detector(self, fold: int) -> str:
        return self.key("detect", f"fold{fold}")

    def classifier(self, kind: str, fold: int) -> str:
        return self.key("classify", kind, f"fold{fold}")

    @property
    def oof_boxes(self) -> str:
        # Not under detect/: level 2 reads every detect/fold*/oof.csv there as truth.
        return self.key("oof_boxes.csv")

    def incoming_prefix(self, collection: str) -> str:
        return self.key("incoming", collection_name(collection))

    def incoming_boxes(self, collection: str) -> str:
        return join(self.incoming_prefix(collection), "boxes.csv")

    def incoming_preds(self, collection: str, kind: str, fold: int) -> str:
        return join(self.incoming_prefix(collection), "preds", f"{kind}-fold{fold}.parquet")

    @property
    def blend_kinds(self) -> list[str]:
        """The classifiers level 2 stacks and the bundle keeps: the fine-tuned ones when
        there is something to adapt to (they supersede their base models; keeping both
        would double the cost of reading every page)."""
        return [finetuned(k) for k in self.kinds] if self.incoming else list(self.kinds)

    @property
    def pseudolabels(self) -> str:
        return self.key(PSEUDO_LABELS)

    @property
    def bundle(self) -> str:
        return self.run  # the run prefix is the bundle root (bundle.json lives there)

    @property
    def evaluation(self) -> str:
        return self.key("evaluation.json")

    # -- job arguments (``--profile`` everywhere; the store comes from KZ_STORE)
    def _p(self, *args: Any) -> list[str]:
        return [*map(str, args), "--profile", self.profile]

    def args(self) -> dict[str, Any]:
        folds = range(self.n_folds)
        return {
            "plan": self.model_dump(),
            # none when the weights are fresh: the mapped task is then skipped
            "pretrain": [self._p("--kind", kind, "--out", PRETRAINED) for kind in self.pretrain],
            "validate": self._p(self.dataset, "--out", self.key("validation")),
            "folds": self._p(self.dataset, "--out", self.folds_key),
            "detect_train": [
                self._p("--dataset", self.dataset, "--folds", self.folds_key, "--fold", k,
                        "--out", self.detector(k), "--no-progress")
                for k in folds
            ],
            "detect_oof": [
                self._p("--model", self.key("detect", f"fold{k}", "model.pt"),
                        "--dataset", self.dataset, "--valid-only", "--folds", self.folds_key,
                        "--fold", k, "--out", self.key("detect", f"fold{k}", "oof.csv"),
                        "--no-progress")
                for k in folds
            ],
            "classify_train": [
                self._p("--kind", kind, "--fold", k, "--dataset", self.dataset,
                        "--folds", self.folds_key, "--boxes", self.oof_boxes,
                        "--out", self.classifier(kind, k), "--no-progress")
                for kind in self.kinds
                for k in folds
            ],
            "merge_oof": self._p(
                *[self.key("detect", f"fold{k}", "oof.csv") for k in folds], "--out", self.oof_boxes
            ),
            "detect_incoming": [
                self._p("--model", self.key("detect", "fold0", "model.pt"), "--dataset", c,
                        "--out", self.incoming_boxes(c), "--no-progress")
                for c in self.incoming
            ],
            "classify_incoming": [
                self._p("--model", join(self.classifier(kind, k), "model.pt"),
                        "--dataset", c, "--boxes", self.incoming_boxes(c),
                        "--out", self.incoming_preds(c, kind, k), "--no-progress")
                for c in self.incoming
                for kind in self.kinds
                for k in folds
            ],
            "pseudolabel": self._p(
                *[a for c in self.incoming for a in ("--preds", self.incoming_prefix(c))],
                "--out", self.pseudolabels, "--run", self.run,
            ),
            "finetune": [
                self._p("--kind", kind, "--fold", k, "--dataset", self.dataset,
                        "--folds", self.folds_key, "--boxes", self.oof_boxes,
                        "--pseudo", self.pseudolabels,
                        *[a for c in self.incoming for a in ("--pseudo-dataset", c)],
                        "--init", join(self.classifier(kind, k), "model.pt"),
                        "--name", finetuned(kind),
                        # A kind of its own for level 2 and the bundle, as in the seed.
                        "--out", self.classifier(finetuned(kind), k), "--no-progress")
                for kind in self.kinds
                for k in folds
            ] if self.incoming else [],
            "level2": self._p("--run", self.run, "--dataset", self.dataset,
                              *[a for kind in self.blend_kinds for a in ("--kind", kind)]),
            "bundle": self._p("--run", self.run, "--dataset", self.dataset),
            "evaluate": self._p("--model", self.bundle, "--dataset", self.heldout,
                                "--out", self.evaluation),
            "register": self._p("--bundle", self.bundle, "--evaluation", self.evaluation,
                                "--dataset", self.dataset),
        }


def collection_from(params: dict[str, Any], triggering_asset_events: Any = None) -> str:
    """The collection a recognition run reads: the param, else the newest asset event's.

    A producer announces a collection with an event on the ``kz_incoming`` asset whose
    extra is ``{"collection": "<store key>"}``.
    """
    if params.get("collection"):
        return str(params["collection"])
    events = [e for evs in (triggering_asset_events or {}).values() for e in evs]
    named = [e for e in events if (e.extra or {}).get("collection")]
    if not named:
        return ""
    return str(max(named, key=lambda e: e.timestamp).extra["collection"])


class RecognizePlan(BaseModel):
    """The keys and jobs of one recognition run over one collection."""

    model_config = ConfigDict(extra="forbid")

    run: str
    profile: str
    model: str
    collection: str
    shards: int
    batch: int = PAGES_PER_BATCH  # pages per level-2 call (`kzjobs recognize --batch`)
    adapt: bool | None = None  # `--adapt/--no-adapt`; None: the model's own setting
    out: str
    # Library formats the merge writes (`--formats`; kzjobs.export.FORMATS), and the
    # public URL of ``out`` for IIIF ids (`--base-url`; None: the store's own URI).
    formats: list[str] = Field(default_factory=list)
    base_url: str | None = None

    @classmethod
    def build(cls, params: dict[str, Any], run_id: str, collection: str) -> RecognizePlan:
        if not collection:
            raise ValueError("no collection: pass the 'collection' param or trigger by asset")
        name = collection_name(collection)
        return cls(
            run=join("runs", "recognize", name, safe_run_id(run_id)),
            profile=params["profile"],
            model=params.get("model") or champion_ref(),
            collection=collection,
            shards=max(1, int(params.get("shards") or 1)),
            batch=max(1, int(params.get("batch") or PAGES_PER_BATCH)),
            adapt=params.get("adapt"),
            out=join(params.get("out_prefix") or "predictions", name),
            formats=parse_formats(params.get("formats") or []),
            base_url=params.get("base_url") or None,
        )

    def _p(self, *args: Any) -> list[str]:
        return [*map(str, args), "--profile", self.profile]

    @property
    def validation(self) -> str:
        return join(self.run, "validation")

    def args(self) -> dict[str, Any]:
        # Recognition reads only the pages validation passed; merge lists the rest.
        where = ("--collection", self.collection, "--out", self.out,
                 "--validation", self.validation)
        adapt = [] if self.adapt is None else ["--adapt" if self.adapt else "--no-adapt"]
        return {
            "plan": self.model_dump(),
            "validate": self._p(self.collection, "--out", self.validation),
            # no --profile: a blend recognizes with the settings it was evaluated with
            "recognize": [
                ["--model", self.model, *where, "--shard", f"{i}/{self.shards}",
                 "--batch", str(self.batch), *adapt]
                for i in range(self.shards)
            ],
            # merging reads results, not models: no profile. The library formats are
            # written here only (a one-shard recognize merges too, without them), once.
            "merge": [*where, *(["--formats", ",".join(self.formats)] if self.formats else []),
                      *(["--base-url", self.base_url] if self.base_url else [])],
        }


def promote_args(params: dict[str, Any]) -> list[str]:
    args = ["--version", str(params.get("version") or "candidate")]
    if params.get("heldout"):
        args += ["--heldout", str(params["heldout"])]
    return [*args, "--profile", str(params["profile"])]
