"""Classifier jobs: train one kind on one fold (and predict its OOF boxes), predict boxes.

``ClassifyTrainJob`` writes under its ``out`` prefix (in a training run,
``<run>/classify/<kind>/fold<K>``: ``RunKeys.classify``): ``checkpoint.pt`` after every
epoch (a re-run resumes from it), then
``oof.parquet`` (the fold's held-out pages), ``oof.quarantine.json``, ``metrics.json``
and, last, ``model.pt``. A re-run after ``model.pt`` exists does nothing.

Heavy modules are imported inside ``run`` so that DAG files can import the job classes.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field

from kzjobs.core.device import torch_threads
from kzjobs.core.job import Cli, Job
from kzjobs.core.quarantine import beside, entries, records, write_quarantine
from kzjobs.core.store import join

if TYPE_CHECKING:
    import pyarrow as pa

    from kzjobs.data.dataset import Dataset
    from kzjobs.data.format import Box

EXPERIMENT = "kz-classify"
STAGE = "classify"  # the stage its quarantine records name
log = logging.getLogger(__name__)


# Settings that may change between a run and its resume without changing the result.
_RESUME_FREE = {"threads", "checkpoint_seconds"}


class ClassifyTrainJob(Job):
    dataset: str = Field(description="Dataset key in the store (train.csv and images), or a "
                         "path/URI.")
    folds: str = Field(description="Store key of the folds JSON (`kzjobs folds`).")
    boxes: str = Field(description="Store key of the detector's OOF boxes (CSV), labelled by "
                       "IoU (seg_fp included).")
    kind: str = Field(description="Backbone: resnet18/34/50/101/152, resnext101_32x8d.")
    # A fine-tuned model is ``<kind>-ft``, so level 2 and the bundle see it as a kind of its own.
    name: str | None = Field(None, description="The model's name in its predictions and "
                             "checkpoint (default: kind).")
    fold: int = Field(ge=0, description="The fold held out (its pages get OOF predictions).")
    out: str = Field(description="Key prefix for model.pt, oof.parquet, metrics.json "
                     "(in a run: <run>/classify/<kind>/fold<K>).")
    epochs: int | None = Field(None, ge=1, description="Override the profile's epochs.")
    # Pseudolabelled pages join the training pages of every fold.
    pseudo: str | None = Field(None, description="Pseudolabel box file (CSV, seg_fp allowed) "
                               "of incoming pages to add.")
    pseudo_datasets: Annotated[list[str], Cli(("--pseudo-dataset",))] = Field(
        default_factory=list, description="Collection holding pseudolabelled pages (repeat).")
    init: str | None = Field(None, description="A model.pt to fine-tune (finetune_epochs at "
                             "lr x finetune_lr_factor).")
    progress: bool = Field(True, description="Progress bars on stderr.")

    @property
    def label(self) -> str:
        return self.name or self.kind

    def run(self) -> dict[str, Any]:
        with torch_threads(self.profile.classify.threads):
            return self._run()

    def _pseudo_pages(self, truth: dict, store: Any) -> tuple[dict, dict, list[str]]:
        """(boxes, {image_id: its dataset}, pages without an image) of the pseudolabels."""
        from kzjobs.data.dataset import Dataset
        from kzjobs.data.format import BOX_CODES, read_annotations

        if not self.pseudo:
            return {}, {}, []
        boxes = read_annotations(store.read_bytes(self.pseudo), allow=BOX_CODES)
        overlap = sorted(set(boxes) & set(truth))
        if overlap:
            raise ValueError(f"pseudolabelled pages {overlap[:5]} are labelled training pages")
        collections = [Dataset.open(c, store) for c in self.pseudo_datasets]
        readers, missing = {}, []
        for image_id in boxes:
            owner = next((c for c in collections if image_id in c.pages), None)
            if owner is None:
                missing.append(image_id)
            else:
                readers[image_id] = owner
        return {i: boxes[i] for i in readers}, readers, missing

    def _run(self) -> dict[str, Any]:
        import mlflow
        import torch

        from kzjobs.classify import engine
        from kzjobs.classify.config import KINDS
        from kzjobs.classify.dataset import (
            CropDataset,
            describe,
            loader,
            repeat_to_share,
            vocabulary,
        )
        from kzjobs.classify.model import build_model, model_args, start_from
        from kzjobs.classify.predict import predict_pages
        from kzjobs.core.checkpoint import checkpoint_bytes, load_checkpoint
        from kzjobs.core.device import grad_scaler, seed_everything, select_device
        from kzjobs.core.training import (
            EngineSettings,
            Epoch,
            Optimization,
            Trainer,
            config_params,
        )
        from kzjobs.data.books import book_id, split_fold
        from kzjobs.data.dataset import Dataset
        from kzjobs.data.format import BOX_CODES, read_annotations
        from kzjobs.method.folds import load_folds

        if self.kind not in KINDS:
            raise ValueError(f"unknown classifier kind {self.kind!r}; use one of {KINDS}")
        cfg = self.profile.classify
        if self.epochs:
            cfg = cfg.model_copy(update={"epochs": self.epochs})
        store = self.store
        prefix = self.out
        keys = {name: join(prefix, name) for name in ("model.pt", "oof.parquet", "metrics.json")}
        summary = {"kind": self.kind, "fold": self.fold, "model": keys["model.pt"],
                   "oof": keys["oof.parquet"]}
        if store.exists(keys["model.pt"]) and store.exists(keys["metrics.json"]):
            return summary | {"skipped": "model.pt exists"} | store.read_json(keys["metrics.json"])

        data = Dataset.open(self.dataset, store)
        if not data.labelled:
            raise ValueError(f"dataset {self.dataset!r} has no train.csv: cannot train")
        truth = data.annotations
        boxes = read_annotations(store.read_bytes(self.boxes), allow=BOX_CODES)
        folds = load_folds(store, self.folds)
        unknown = sorted({book_id(i) for i in truth} - set(folds))
        if unknown:
            raise ValueError(f"books {unknown[:5]} are not in the folds file {self.folds!r}")
        # F1 is judged on every page of the held-out books, so a page the detector missed
        # entirely still counts its characters as misses.
        train_ids, judged_ids = split_fold(list(truth), folds, self.fold)
        train_ids = [i for i in train_ids if i in boxes]
        valid_ids = [i for i in judged_ids if i in boxes]
        if not train_ids:
            raise ValueError(f"fold {self.fold}: no training pages in {self.boxes!r}")
        names = data.vocabulary if data.store.exists("unicode_translation.csv") else {}
        vocab = vocabulary(truth, names or None)
        pseudo_boxes, readers, no_image = self._pseudo_pages(truth, store)

        device = select_device(self.settings.device)
        seed = cfg.seed + self.fold  # folds differ in data and in their random streams
        seed_everything(seed)
        args = model_args(self.kind, len(vocab), cfg)
        model = build_model(args)
        if self.init:
            base = load_checkpoint(store.read_bytes(self.init))
            if base["vocabulary"] != vocab or base["model_args"] != args:
                raise ValueError(f"{self.init} is another model or vocabulary than this job's")
            model.load_state_dict(base["model"])
            cfg = cfg.model_copy(update={"epochs": self.epochs or cfg.finetune_epochs,
                                         "lr": cfg.lr * cfg.finetune_lr_factor})
        elif self.kind in cfg.weights:
            start_from(model, cfg.weights[self.kind], vocab, store)
        model.to(device)
        pseudo_ids = repeat_to_share(list(pseudo_boxes), len(train_ids), cfg.pseudo_share)
        crops = CropDataset(data, boxes | pseudo_boxes, train_ids + pseudo_ids, vocab,
                            cfg, seed=seed, readers=readers)
        generator = torch.Generator()
        batches = loader(crops, cfg, generator, pin_memory=device.type == "cuda")
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = engine.make_optimizer(params, cfg)
        optimization = Optimization(optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=max(1, cfg.epochs * len(batches))), grad_scaler(device, cfg.amp))
        settings = EngineSettings(device, amp=cfg.amp, progress=self.progress)
        trainer = Trainer(store, prefix, model, optimization, cfg, fold=self.fold,
                          label=f"{self.label} fold {self.fold}", resume_free=_RESUME_FREE,
                          checkpoint_seconds=cfg.checkpoint_seconds,
                          identity={"vocabulary": vocab, "model_args": args})
        trainer.resume()

        def train(epoch: Epoch) -> dict[str, float]:
            # Every epoch is seeded, so a resumed run repeats the same batches.
            crops.set_epoch(epoch.index)
            generator.manual_seed(seed * 1000 + epoch.index)
            torch.manual_seed(seed * 1000 + epoch.index)
            epoch_batches = iter(batches)
            # The items a checkpoint within the epoch trained on are made again, not
            # trained on: the crops' and the box caps' random streams then stand where they
            # stood, and the global one is the checkpoint's.
            for _ in itertools.islice(epoch_batches, int(epoch.running.get("consumed", 0))):
                pass
            epoch.restore_rng()
            stats = engine.train_one_epoch(model, optimization, epoch_batches, settings,
                                           epoch=epoch)
            return {f"train_{k}": v for k, v in stats.items()}

        def evaluate(epoch: int) -> dict[str, float]:
            if not (cfg.eval_every and (epoch + 1) % cfg.eval_every == 0
                    and epoch + 1 < cfg.epochs and valid_ids):
                return {}
            table, _ = predict_pages(model, vocab, data, boxes, valid_ids, cfg=cfg,
                                     device=device, kind=self.label, fold=self.fold,
                                     scales=(1.0,), progress=False)
            found = engine.evaluate(table, boxes, truth, judged_ids)
            return {f"valid_{k}": found[k] for k in ("accuracy", "f1")}

        run_params = config_params(cfg) | {
            "kind": self.kind, "fold": self.fold, "profile": self.profile.name,
            "dataset": self.dataset, "boxes": self.boxes, "classes": len(vocab),
            "pseudo": self.pseudo, "pseudo_pages": len(pseudo_boxes), "init": self.init,
            "pseudo_pages_per_epoch": len(pseudo_ids),
            "train_pages": len(train_ids), "valid_pages": len(valid_ids),
            "device": device.type, "trainable_params": sum(p.numel() for p in params),
        } | {f"epoch_{k}": v for k, v in describe(crops).items()}
        with trainer.mlflow_run(EXPERIMENT, f"{self.label}-fold{self.fold}", run_params) as run:
            trainer.fit(cfg.epochs, train, evaluate)

            table, quarantine = predict_pages(
                model, vocab, data, boxes, valid_ids, cfg=cfg, device=device, kind=self.label,
                fold=self.fold, store=store, out=keys["oof.parquet"], progress=self.progress,
            )
            write_quarantine(store, beside(keys["oof.parquet"]), records(quarantine, STAGE))
            found = engine.evaluate(table, boxes, truth, judged_ids, names=names)
            metrics = {k: v for k, v in found.items() if k not in ("score", "confusion")}
            by_book = {b: c["f1"] for b, c in found["score"]["by_book"].items()}
            mlflow.log_metrics({f"valid_{k}": float(v) for k, v in metrics.items()}
                               | {f"valid_f1_book_{b}": f for b, f in by_book.items()}
                               | {"train_seconds": trainer.train_seconds})
            mlflow.log_dict(found["score"], "valid_f1_by_book.json")
            mlflow.log_dict(found["confusion"], "confusion_frequent_classes.json")
            self._log_pictures(table, boxes, truth, data, by_book, found["f1"])
            result = {
                "valid": metrics | {"f1_by_book": by_book},
                "quarantined": len(quarantine),
                "unreadable_train_pages": crops.bad_pages,
                "pseudo_pages": len(pseudo_boxes),
                "pseudo_pages_per_epoch": len(pseudo_ids),
                "pseudo_pages_without_image": no_image,
                "train_seconds": round(trainer.train_seconds, 1),
                "epochs": cfg.epochs,
                "lr": cfg.lr,
                "classes": len(vocab),
                "train_pages": len(train_ids),
                "valid_pages": len(valid_ids),
                "history": trainer.history,
                "mlflow_run_id": run.info.run_id,
            }
            store.write_json(keys["metrics.json"], result | {"confusion": found["confusion"]})
            store.write_bytes(keys["model.pt"], checkpoint_bytes({
                "model": model.state_dict(), "vocabulary": vocab, "model_args": args,
                "kind": self.label, "fold": self.fold, "config": cfg.model_dump(mode="json"),
                "profile": self.profile.name, "metrics": metrics,
            }))
        trainer.done()
        return summary | result

    def _log_pictures(self, table: pa.Table, boxes: Mapping[str, Sequence[Box]],
                      truth: Mapping[str, Sequence[Box]], data: Dataset,
                      by_book: dict[str, float], f1: float) -> None:
        """The dev pages as pictures in the MLflow run (kzjobs.method.figures)."""
        from kzjobs.classify.engine import judged_boxes
        from kzjobs.method.figures import classifier_pictures, log_pictures

        try:
            log_pictures(classifier_pictures(
                judged_boxes(table, boxes), boxes, truth, by_book, data.read_image,
                title=f"{self.label} fold {self.fold}: F1 on its dev books", overall=f1))
        except Exception:  # pictures are for people: a drawing bug must not fail training
            log.exception("could not draw the run's pictures")


class ClassifyPredictJob(Job):
    model: str = Field(description="Store key of a classifier model.pt.")
    dataset: str = Field(description="Dataset or collection key (images), or a path/URI.")
    # box_id = the box's index in its page's list
    boxes: str = Field(description="Store key of the box file (CSV, train.csv format).")
    out: str = Field(description="Store key of the predictions parquet.")
    scales: Annotated[tuple[float, ...] | None, Cli(("--scale",))] = Field(
        None, description="TTA scale (repeat); default: the profile's.")
    progress: bool = Field(True, description="Progress bars on stderr.")

    def run(self) -> dict[str, Any]:
        with torch_threads(self.profile.classify.threads):
            return self._run()

    def _run(self) -> dict[str, Any]:
        from kzjobs.classify.model import load_model
        from kzjobs.classify.predict import predict_pages
        from kzjobs.core.checkpoint import load_checkpoint
        from kzjobs.core.device import select_device
        from kzjobs.data.dataset import Dataset
        from kzjobs.data.format import BOX_CODES, read_annotations

        store = self.store
        ckpt = load_checkpoint(store.read_bytes(self.model))
        device = select_device(self.settings.device)
        model, vocab = load_model(ckpt, device)
        # The page scale is the one the model learned; TTA and top-k are the profile's.
        cfg = self.profile.classify.model_copy(update={"page_size": ckpt["config"]["page_size"]})
        data = Dataset.open(self.dataset, store)
        boxes = read_annotations(store.read_bytes(self.boxes), allow=BOX_CODES)
        start = time.perf_counter()
        table, quarantine = predict_pages(
            model, vocab, data, boxes, list(boxes), cfg=cfg, device=device,
            kind=ckpt["kind"], fold=ckpt["fold"], scales=self.scales, store=store, out=self.out,
            progress=self.progress,
        )
        write_quarantine(store, beside(self.out), records(quarantine, STAGE))
        return {
            "out": self.out,
            "kind": ckpt["kind"],
            "fold": ckpt["fold"],
            "pages": len(boxes),
            "predicted_pages": len(set(table.column("image_id").to_pylist())),
            "boxes": table.num_rows,
            "quarantined": entries(records(quarantine, STAGE)),
            "scales": list(self.scales or cfg.tta_scales),
            "seconds": round(time.perf_counter() - start, 1),
        }
