"""Classifier jobs: train one kind on one fold (and predict its OOF boxes), predict boxes.

``ClassifyTrainJob`` writes under its ``out`` prefix (in a training run,
``<run>/classify/<kind>/fold<K>``: :func:`model_prefix`): ``checkpoint.pt`` after every
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
from typing import TYPE_CHECKING, Any

from pydantic import Field

from kzjobs.device import torch_threads
from kzjobs.job import Job
from kzjobs.store import join

if TYPE_CHECKING:
    import pyarrow as pa

    from kzjobs.data.dataset import Dataset
    from kzjobs.data.format import Box

EXPERIMENT = "kz-classify"
log = logging.getLogger(__name__)


def model_prefix(run: str, kind: str, fold: int) -> str:
    """Where a run keeps one classifier: ``<run>/classify/<kind>/fold<K>``."""
    return join(run, "classify", kind, f"fold{fold}")


def quarantine_key(out: str) -> str:
    """``preds/x.parquet`` -> ``preds/x.quarantine.json``."""
    return f"{out.removesuffix('.parquet')}.quarantine.json"


def _quarantine_records(quarantine: dict[str, str]) -> list[dict[str, str]]:
    return [{"item": image_id, "reason": reason} for image_id, reason in quarantine.items()]


# Settings that may change between a run and its resume without changing the result.
_RESUME_FREE = {"threads", "checkpoint_seconds"}


def _flat_params(config: dict[str, Any]) -> dict[str, str]:
    return {k: ",".join(map(str, v)) if isinstance(v, list | tuple) else str(v)
            for k, v in config.items()}


class ClassifyTrainJob(Job):
    dataset: str  # dataset key (or path/URI) with train.csv and images
    folds: str  # folds JSON key (FoldsJob)
    boxes: str  # detector OOF boxes, train.csv format, labelled by IoU (seg_fp included)
    kind: str  # backbone name, e.g. resnet18, resnext101_32x8d
    # The model's name in its predictions and checkpoint (default: ``kind``); a fine-tuned
    # model is ``<kind>-ft``, so level 2 and the bundle see it as a kind of its own.
    name: str | None = None
    fold: int = Field(ge=0)
    out: str  # prefix for model.pt, oof.parquet...: model_prefix(run, kind, fold) in a run
    epochs: int | None = Field(None, ge=1)  # overrides the profile's
    # Pseudolabels: a box file (train.csv format, seg_fp allowed) of incoming pages whose
    # images are in ``pseudo_datasets``; they join the training pages of every fold.
    pseudo: str | None = None
    pseudo_datasets: list[str] = Field(default_factory=list)
    # A model.pt to fine-tune from (finetune_epochs at lr x finetune_lr_factor).
    init: str | None = None
    progress: bool = True

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

        from kzjobs.checkpoint import (
            changed_settings,
            checkpoint_bytes,
            load_checkpoint,
            rng_state,
            set_rng_state,
        )
        from kzjobs.classify.config import KINDS
        from kzjobs.classify.dataset import (
            CropDataset,
            describe,
            loader,
            repeat_to_share,
            vocabulary,
        )
        from kzjobs.classify.engine import evaluate, make_optimizer, train_one_epoch
        from kzjobs.classify.model import build_model, model_args, start_from
        from kzjobs.classify.predict import predict_pages
        from kzjobs.data.books import book_id, split_fold
        from kzjobs.data.dataset import Dataset
        from kzjobs.data.format import BOX_CODES, read_annotations
        from kzjobs.device import grad_scaler, seed_everything, select_device
        from kzjobs.folds import load_folds

        if self.kind not in KINDS:
            raise ValueError(f"unknown classifier kind {self.kind!r}; use one of {KINDS}")
        cfg = self.profile.classify
        if self.epochs:
            cfg = cfg.model_copy(update={"epochs": self.epochs})
        store = self.store
        prefix = self.out
        keys = {name: join(prefix, name) for name in
                ("model.pt", "checkpoint.pt", "oof.parquet", "metrics.json")}
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
        vocab = vocabulary(truth)
        names = data.vocabulary if data.store.exists("unicode_translation.csv") else {}
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
        optimizer = make_optimizer(params, cfg)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=max(1, cfg.epochs * len(batches))
        )
        scaler = grad_scaler(device, cfg.amp)
        # "within": where a checkpoint within the next epoch left it.
        state: dict[str, Any] = {"epoch": -1, "history": [], "train_seconds": 0.0,
                                 "mlflow_run_id": None, "within": None}
        if store.exists(keys["checkpoint.pt"]):
            ckpt = load_checkpoint(store.read_bytes(keys["checkpoint.pt"]))
            changed = changed_settings(ckpt["config"], cfg.model_dump(mode="json"), _RESUME_FREE)
            if (ckpt["vocabulary"], ckpt["model_args"]) != (vocab, args) or changed:
                raise ValueError(f"{keys['checkpoint.pt']} is for another model, vocabulary or "
                                 f"configuration (changed: {changed}); delete it to start over")
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scheduler.load_state_dict(ckpt["scheduler"])
            scaler.load_state_dict(ckpt["scaler"])
            state = {k: ckpt.get(k) for k in state}
            log.info("resuming %s fold %d at epoch %d, step %d", self.label, self.fold,
                     state["epoch"] + 1,
                     state["within"]["running"]["batches"] if state["within"] else 0)

        from kzjobs import registry

        # Created with the configured artifact root: mlflow.set_experiment alone would put
        # a database-backed run's artifacts in ./mlruns of whatever folder the job runs in.
        mlflow.set_experiment(experiment_id=registry.experiment_id(
            registry.client(self.settings.tracking_uri), EXPERIMENT))
        with mlflow.start_run(run_id=state["mlflow_run_id"],
                              run_name=f"{self.label}-fold{self.fold}") as run:
            if state["mlflow_run_id"] is None:
                mlflow.log_params(_flat_params(cfg.model_dump()) | {
                    "kind": self.kind, "fold": self.fold, "profile": self.profile.name,
                    "dataset": self.dataset, "boxes": self.boxes, "classes": len(vocab),
                    "pseudo": self.pseudo, "pseudo_pages": len(pseudo_boxes), "init": self.init,
                    "pseudo_pages_per_epoch": len(pseudo_ids),
                    "train_pages": len(train_ids), "valid_pages": len(valid_ids),
                    "device": device.type, "trainable_params": sum(p.numel() for p in params),
                } | {f"epoch_{k}": v for k, v in describe(crops).items()})
            state["mlflow_run_id"] = run.info.run_id

            def checkpoint() -> None:
                store.write_bytes(keys["checkpoint.pt"], checkpoint_bytes({
                    "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(),
                    "vocabulary": vocab, "model_args": args,
                    "config": cfg.model_dump(mode="json"), **state,
                }))

            for epoch in range(state["epoch"] + 1, cfg.epochs):
                # Every epoch is seeded, so a resumed run repeats the same batches.
                crops.set_epoch(epoch)
                generator.manual_seed(seed * 1000 + epoch)
                torch.manual_seed(seed * 1000 + epoch)
                within, state["within"] = state["within"], None
                running = within["running"] if within else {}
                before = within["seconds"] if within else 0.0
                start = time.perf_counter()
                epoch_batches = iter(batches)
                if within:
                    # The items a checkpoint within the epoch trained on are made again,
                    # not trained on: the crops' and the box caps' random streams then
                    # stand where they stood, and the global one is the checkpoint's.
                    for _ in itertools.islice(epoch_batches, int(running["consumed"])):
                        pass
                    set_rng_state(within["rng"])

                def save_within(sums: dict[str, float], before: float = before,
                                start: float = start, epoch: int = epoch) -> None:
                    state["within"] = {"running": sums, "rng": rng_state(),
                                       "seconds": before + time.perf_counter() - start}
                    checkpoint()
                    log.info("%s fold %d epoch %d: checkpointed at step %d, loss %.4f",
                             self.label, self.fold, epoch, sums["batches"],
                             sums["loss_sum"] / max(sums["seen"], 1))

                stats = train_one_epoch(model, optimizer, scheduler, epoch_batches, device,
                                        scaler, epoch=epoch, amp=cfg.amp, progress=self.progress,
                                        running=running, save=save_within,
                                        save_every=cfg.checkpoint_seconds)
                state["within"] = None
                state["train_seconds"] += before + time.perf_counter() - start
                log.info("%s fold %d epoch %d/%d: loss %.4f, accuracy %.3f in %.0f s",
                         self.label, self.fold, epoch + 1, cfg.epochs, stats["loss"],
                         stats["accuracy"], before + time.perf_counter() - start)
                stats = {f"train_{k}": v for k, v in stats.items()}
                if cfg.eval_every and (epoch + 1) % cfg.eval_every == 0 \
                        and epoch + 1 < cfg.epochs and valid_ids:
                    table, _ = predict_pages(model, vocab, data, boxes, valid_ids, cfg=cfg,
                                             device=device, kind=self.label, fold=self.fold,
                                             scales=(1.0,), progress=False)
                    found = evaluate(table, boxes, truth, judged_ids)
                    stats |= {f"valid_{k}": found[k] for k in ("accuracy", "f1")}
                mlflow.log_metrics(stats, step=epoch)
                state["history"].append({"epoch": epoch, **stats})
                state["epoch"] = epoch
                checkpoint()

            table, quarantine = predict_pages(
                model, vocab, data, boxes, valid_ids, cfg=cfg, device=device, kind=self.label,
                fold=self.fold, store=store, out=keys["oof.parquet"], progress=self.progress,
            )
            store.write_json(quarantine_key(keys["oof.parquet"]), _quarantine_records(quarantine))
            found = evaluate(table, boxes, truth, judged_ids, names=names)
            metrics = {k: v for k, v in found.items() if k not in ("score", "confusion")}
            by_book = {b: c["f1"] for b, c in found["score"]["by_book"].items()}
            mlflow.log_metrics({f"valid_{k}": float(v) for k, v in metrics.items()}
                               | {f"valid_f1_book_{b}": f for b, f in by_book.items()}
                               | {"train_seconds": state["train_seconds"]})
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
                "train_seconds": round(state["train_seconds"], 1),
                "epochs": cfg.epochs,
                "lr": cfg.lr,
                "classes": len(vocab),
                "train_pages": len(train_ids),
                "valid_pages": len(valid_ids),
                "history": state["history"],
                "mlflow_run_id": run.info.run_id,
            }
            store.write_json(keys["metrics.json"], result | {"confusion": found["confusion"]})
            store.write_bytes(keys["model.pt"], checkpoint_bytes({
                "model": model.state_dict(), "vocabulary": vocab, "model_args": args,
                "kind": self.label, "fold": self.fold, "config": cfg.model_dump(mode="json"),
                "profile": self.profile.name, "metrics": metrics,
            }))
        store.delete(keys["checkpoint.pt"])
        return summary | result


    def _log_pictures(self, table: pa.Table, boxes: Mapping[str, Sequence[Box]],
                      truth: Mapping[str, Sequence[Box]], data: Dataset,
                      by_book: dict[str, float], f1: float) -> None:
        """The dev pages as pictures in the MLflow run (kzjobs.figures)."""
        from kzjobs.classify.engine import judged_boxes
        from kzjobs.figures import classifier_pictures, log_pictures

        try:
            log_pictures(classifier_pictures(
                judged_boxes(table, boxes), boxes, truth, by_book, data.read_image,
                title=f"{self.label} fold {self.fold}: F1 on its dev books", overall=f1))
        except Exception:  # pictures are for people: a drawing bug must not fail training
            log.exception("could not draw the run's pictures")


class ClassifyPredictJob(Job):
    model: str  # key of a classifier model.pt
    dataset: str  # dataset or incoming collection (images)
    boxes: str  # box file (train.csv format); box_id = index in a page's list
    out: str  # parquet key
    scales: tuple[float, ...] | None = None  # TTA scales; default: the profile's
    progress: bool = True

    def run(self) -> dict[str, Any]:
        with torch_threads(self.profile.classify.threads):
            return self._run()

    def _run(self) -> dict[str, Any]:
        from kzjobs.checkpoint import load_checkpoint
        from kzjobs.classify.model import load_model
        from kzjobs.classify.predict import predict_pages
        from kzjobs.data.dataset import Dataset
        from kzjobs.data.format import BOX_CODES, read_annotations
        from kzjobs.device import select_device

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
        store.write_json(quarantine_key(self.out), _quarantine_records(quarantine))
        return {
            "out": self.out,
            "kind": ckpt["kind"],
            "fold": ckpt["fold"],
            "pages": len(boxes),
            "predicted_pages": len(set(table.column("image_id").to_pylist())),
            "boxes": table.num_rows,
            "quarantined": _quarantine_records(quarantine),
            "scales": list(self.scales or cfg.tta_scales),
            "seconds": round(time.perf_counter() - start, 1),
        }
