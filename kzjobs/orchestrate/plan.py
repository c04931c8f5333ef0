"""What each DAG run does, as data: store keys and the ``kzjobs`` arguments of every job.

A DAG's first task builds a plan from its params and run id; every later task takes
its arguments from the plan, so tasks pass store keys, never data. Plans import no
Airflow and no heavy module, and are tested on their own.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from kzjobs.commands import argv
from kzjobs.core.keys import RunKeys, collection_name, finetuned, recognize_run, retrain_run
from kzjobs.core.profile import load_profile
from kzjobs.core.settings import get_settings
from kzjobs.core.store import join
from kzjobs.export import parse_formats
from kzjobs.pretrain.config import PRETRAINED
from kzjobs.recognize import PAGES_PER_BATCH

# Assets (names and URIs): Airflow DAG files build ``Asset(name=..., uri=...)`` from these.
CANDIDATE_ASSET = ("kz_candidate", "kzjobs://registry/kz-recognizer/candidate")
COLLECTION_ASSET = ("kz_incoming", "kzjobs://store/incoming")
PREDICTIONS_ASSET = ("kz_predictions", "kzjobs://store/predictions")


def champion_ref() -> str:
    return f"models:/{get_settings().registry_model}@champion"


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
    finetune: bool = True  # the profile's pseudo.finetune

    @classmethod
    def build(cls, params: dict[str, Any], run_id: str) -> RetrainPlan:
        from kzjobs.pretrain.job import stale_kinds

        profile = load_profile(params["profile"])
        return cls(
            run=retrain_run(run_id),
            profile=params["profile"],
            dataset=params["dataset"],
            heldout=params["heldout"],
            incoming=[c for c in params.get("incoming") or [] if c],
            n_folds=profile.data.n_folds,
            kinds=list(profile.classify.kinds),
            pretrain=stale_kinds(params["profile"]),
            finetune=profile.pseudo.finetune,
        )

    @property
    def keys(self) -> RunKeys:
        return RunKeys(self.run)

    @property
    def fine_tunes(self) -> bool:
        """Whether the classifiers are fine-tuned on pseudolabels of the incoming pages."""
        return bool(self.incoming) and self.finetune

    @property
    def blend_kinds(self) -> list[str]:
        """The classifiers level 2 stacks and the bundle keeps: the fine-tuned ones when
        there are (they supersede their base models; keeping both would double the cost
        of reading every page)."""
        return [finetuned(k) for k in self.kinds] if self.fine_tunes else list(self.kinds)

    # -- job arguments (``--profile`` everywhere; the store comes from KZ_STORE)
    def _job(self, command: str, **fields: Any) -> list[str]:
        return argv(command, profile_name=self.profile, **fields)

    def args(self) -> dict[str, Any]:
        folds, keys = range(self.n_folds), self.keys
        return {
            "plan": self.model_dump(),
            # none when the weights are fresh: the mapped task is then skipped
            "pretrain": [self._job("pretrain", kinds=[kind], out=PRETRAINED)
                         for kind in self.pretrain],
            "validate": self._job("validate annotations", dataset=self.dataset,
                                  out=keys.validation),
            "folds": self._job("folds", dataset=self.dataset, out=keys.folds),
            "detect_train": [
                self._job("detect train", dataset=self.dataset, folds=keys.folds, fold=k,
                          out=keys.detect_fold(k), progress=False)
                for k in folds
            ],
            "detect_oof": [
                self._job("detect predict", model=keys.detector(k),
                          dataset=self.dataset, valid_only=True, folds=keys.folds, fold=k,
                          out=keys.detect_oof(k), progress=False)
                for k in folds
            ],
            "classify_train": [
                self._job("classify train", kind=kind, fold=k, dataset=self.dataset,
                          folds=keys.folds, boxes=keys.oof_boxes,
                          out=keys.classify(kind, k), progress=False)
                for kind in self.kinds
                for k in folds
            ],
            "merge_oof": self._job(
                "merge-boxes", inputs=[keys.detect_oof(k) for k in folds],
                out=keys.oof_boxes),
            "detect_incoming": [
                self._job("detect predict", model=keys.detector(0),
                          dataset=c, out=keys.incoming_boxes(c), progress=False)
                for c in self.incoming
            ],
            "classify_incoming": [
                self._job("classify predict", model=keys.classifier(kind, k),
                          dataset=c, boxes=keys.incoming_boxes(c),
                          out=keys.incoming_preds(c, kind, k), progress=False)
                for c in self.incoming
                for kind in self.kinds
                for k in folds
            ],
            "pseudolabel": self._job(
                "pseudo", preds=[keys.incoming(c) for c in self.incoming],
                out=keys.pseudo_labels, oof_run=self.run),
            "finetune": [
                self._job("classify train", kind=kind, fold=k, dataset=self.dataset,
                          folds=keys.folds, boxes=keys.oof_boxes, pseudo=keys.pseudo_labels,
                          pseudo_datasets=self.incoming,
                          init=keys.classifier(kind, k), name=finetuned(kind),
                          # A kind of its own for level 2 and the bundle, as in the seed.
                          out=keys.classify(finetuned(kind), k), progress=False)
                for kind in self.kinds
                for k in folds
            ] if self.fine_tunes else [],
            "level2": self._job("level2 train", run_prefix=self.run, dataset=self.dataset,
                                kinds=self.blend_kinds),
            "bundle": self._job("bundle", run_prefix=self.run, dataset=self.dataset),
            "evaluate": self._job("evaluate", model=keys.bundle, dataset=self.heldout,
                                  out=keys.evaluation),
            "register": self._job("register", bundle=keys.bundle, evaluation=keys.evaluation,
                                  dataset=self.dataset),
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
            run=recognize_run(collection, run_id),
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

    @property
    def validation(self) -> str:
        return RunKeys(self.run).validation

    def args(self) -> dict[str, Any]:
        # Recognition reads only the pages validation passed; merge lists the rest.
        where = {"collection": self.collection, "out": self.out, "validation": self.validation}
        return {
            "plan": self.model_dump(),
            "validate": argv("validate batch", dataset=self.collection, out=self.validation,
                             profile_name=self.profile),
            # no --profile: a blend recognizes with the settings it was evaluated with
            "recognize": [
                argv("recognize", model=self.model, **where, shard=f"{i}/{self.shards}",
                     batch=self.batch, adapt=self.adapt)
                for i in range(self.shards)
            ],
            # merging reads results, not models: no profile. The library formats are
            # written here only (a one-shard recognize merges too, without them), once.
            "merge": argv("recognize merge", **where, formats=self.formats,
                          base_url=self.base_url),
        }


def promote_args(params: dict[str, Any]) -> list[str]:
    return argv("promote", version=str(params.get("version") or "candidate"),
                heldout=params.get("heldout") or None, profile_name=str(params["profile"]))
