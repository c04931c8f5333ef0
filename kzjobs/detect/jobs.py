"""Detector jobs: train one fold, and predict boxes (out-of-fold or on new pages).

Store layout under a training job's ``out`` prefix:

- ``checkpoint.pt``: the resumable checkpoint, rewritten after every epoch;
- ``model.pt``: the trained detector (state_dict, config, metrics), written at the end;
- ``metrics.json``: the same metrics, readable without torch.

A prediction job writes its boxes CSV at ``out`` (train.csv format), the reason for
each page it could not read at ``<stem>.quarantine.json``, and one part per page
under ``<stem>.parts/`` so a re-run only does the missing pages.

Heavy modules are imported inside ``run()``: building a job stays cheap.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import TYPE_CHECKING, Any

from pydantic import Field

from kzjobs.core.checkpoint import load_checkpoint, save_to_store
from kzjobs.core.job import Job
from kzjobs.core.quarantine import Quarantined, beside, entries, records, write_quarantine
from kzjobs.core.store import Store, UnsafeKeyError, join, validate_key
from kzjobs.data.books import book_id, split_fold
from kzjobs.data.dataset import Dataset

if TYPE_CHECKING:
    import torch

    from kzjobs.data.format import Box
    from kzjobs.detect.config import DetectConfig
    from kzjobs.detect.engine import Detection
    from kzjobs.method.metric import Score

log = logging.getLogger(__name__)
STAGE = "detect"  # the stage its quarantine records name

EXPERIMENT = "kz-detect"
MODEL_FORMAT = "kzjobs.detect/1"
# Settings that may change between a run and its resume without changing the result.
_RESUME_FREE = {"workers", "threads", "checkpoint_seconds"}


def fold_split(ds: Dataset, store: Store, folds_key: str, fold: int) -> tuple[list[str], list[str]]:
    """(train ids, validation ids) of a fold; every book must be in the folds file."""
    from kzjobs.method.folds import load_folds

    folds = load_folds(store, folds_key)
    ids = ds.image_ids()
    missing = sorted({book_id(i) for i in ids} - set(folds))
    if missing:
        raise ValueError(f"books {missing[:5]} of {ds.uri} are not in folds file {folds_key!r}")
    if fold not in set(folds.values()):
        known = sorted(set(folds.values()))
        raise ValueError(f"fold {fold} is not in {folds_key!r} (folds: {known})")
    return split_fold(ids, folds, fold)




def _setup_torch(config: DetectConfig) -> torch.device:
    import torch

    from kzjobs.core.device import select_device
    from kzjobs.core.settings import get_settings

    device = select_device(get_settings().device)
    if device.type == "cpu" and config.threads > 0:
        torch.set_num_threads(config.threads)
    return device


def read_pages(ds: Dataset, image_ids: list[str], quarantine: dict[str, str]):
    """``(image_id, image)`` for each readable page; the others go to ``quarantine``."""
    from kzjobs.core.images import ImageError

    for image_id in image_ids:
        try:
            yield image_id, ds.read_image(image_id)
        except (ImageError, KeyError) as exc:
            quarantine[image_id] = getattr(exc, "reason", None) or str(exc)


class DetectTrainJob(Job):
    """Train the detector on every book of a fold but the fold's own, which validate it."""

    dataset: str = Field(description="Dataset key in the store, or a folder path/URI.")
    folds: str = Field(description="Key of folds.json (`kzjobs folds`).")
    fold: int = Field(description="The fold whose books are held out.")
    out: str = Field(description="Key prefix for model.pt and metrics.json.")
    progress: bool = Field(True, description="Progress bar on stderr.")

    def run(self) -> dict[str, Any]:
        import mlflow
        import torch

        from kzjobs.core.device import grad_scaler, seed_everything
        from kzjobs.core.training import (
            EngineSettings,
            Epoch,
            Optimization,
            Trainer,
            config_params,
        )
        from kzjobs.detect import engine
        from kzjobs.detect.dataset import PageCrops, collate
        from kzjobs.detect.model import build_detector

        config = self.profile.detect
        store = self.store
        model_key, metrics_key = join(self.out, "model.pt"), join(self.out, "metrics.json")
        if store.exists(model_key) and store.exists(metrics_key):
            log.info("%s exists: fold %d is already trained", model_key, self.fold)
            return store.read_json(metrics_key) | {"skipped": True}

        ds = Dataset.open(self.dataset, store)
        if not ds.labelled:
            raise ValueError(f"training needs a labelled dataset; {ds.uri} has no train.csv")
        train_ids, valid_ids = fold_split(ds, store, self.folds, self.fold)
        if not train_ids:
            raise ValueError(f"fold {self.fold} leaves no training pages in {ds.uri}")
        seed_everything(config.seed + self.fold)
        device = _setup_torch(config)
        model = build_detector(config).to(device)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                                    weight_decay=config.weight_decay)
        crops = PageCrops(ds, train_ids, config, seed=config.seed + self.fold)
        iters = -(-len(crops) // config.batch_size)
        optimization = Optimization(optimizer,
                                    engine.lr_scheduler(optimizer, config, iters * config.epochs),
                                    grad_scaler(device, config.amp))
        settings = EngineSettings(device, amp=config.amp, progress=self.progress,
                                  grad_clip=config.grad_clip)
        trainer = Trainer(store, self.out, model, optimization, config, fold=self.fold,
                          label=f"detector fold {self.fold}", resume_free=_RESUME_FREE,
                          checkpoint_seconds=config.checkpoint_seconds)
        trainer.resume()

        def train(epoch: Epoch) -> dict[str, float]:
            crops.set_epoch(epoch.index)
            # The loader's seed (its workers' base seed) is drawn from the global RNG as
            # DataLoader does, and kept for a resume within the epoch.
            if "loader_seed" not in epoch.state:
                epoch.state["loader_seed"] = int(torch.empty((), dtype=torch.int64).random_())
            # The epoch's seeded order, after the batches a checkpoint within it trained.
            order = torch.randperm(len(crops), generator=torch.Generator().manual_seed(
                crops.seed * 1000 + epoch.index))
            loader = torch.utils.data.DataLoader(
                crops, batch_size=config.batch_size,
                sampler=order[int(epoch.running.get("batches", 0)) * config.batch_size:].tolist(),
                num_workers=config.workers, collate_fn=collate,
                pin_memory=device.type == "cuda",
                generator=torch.Generator().manual_seed(epoch.state["loader_seed"]))
            metrics = engine.train_one_epoch(model, optimization, loader, settings, epoch=epoch)
            return {f"train_{k}": v for k, v in metrics.items()}

        run_params = config_params(config, "detect.") | {
            "fold": self.fold, "dataset": self.dataset, "folds": self.folds, "out": self.out,
            "train_pages": len(train_ids), "valid_pages": len(valid_ids),
            "device": str(device), "profile": self.profile.name,
        }
        with trainer.mlflow_run(EXPERIMENT, f"detect-fold{self.fold}", run_params) as run:
            started = time.monotonic()
            trainer.fit(config.epochs, train)
            train_seconds = time.monotonic() - started

            quarantine: dict[str, str] = {}
            truth = {i: ds.annotations[i] for i in valid_ids}
            found, valid = engine.evaluate(model, read_pages(ds, valid_ids, quarantine), truth,
                                           config, settings)
            result = {
                "fold": self.fold,
                "model": model_key,
                "epochs": config.epochs,
                "resumed_from_epoch": trainer.resumed_from,
                "train_pages": len(train_ids),
                "valid_pages": len(valid_ids),
                "valid_books": sorted({book_id(i) for i in valid_ids}),
                "train_seconds": round(trainer.train_seconds, 1),
                "train_seconds_this_run": round(train_seconds, 1),
                "valid": valid.as_dict(by_book=True) if valid_ids else None,
                "quarantined": entries(records(quarantine, STAGE)),
                "mlflow_run_id": run.info.run_id,
                "loss": trainer.history[-1]["train_loss"] if trainer.history else None,
            }
            if valid_ids:
                mlflow.log_metrics({
                    "valid_f1": valid.f1, "valid_precision": valid.precision,
                    "valid_recall": valid.recall,
                    **{f"valid_f1_{b}": c.f1 for b, c in valid.by_book.items()},
                })
                self._log_pictures(ds, found, truth, valid)
            save_to_store(store, model_key, {
                "format": MODEL_FORMAT,
                "model": model.state_dict(),
                "config": config.model_dump(mode="json"),
                "epoch": config.epochs,
                "fold": self.fold,
                "valid_books": result["valid_books"],
                "metrics": {"valid_f1": valid.f1 if valid_ids else None},
            })
            store.write_json(metrics_key, result)
            mlflow.log_dict(result, "detect_metrics.json")
        trainer.done()  # model.pt holds everything a user of the detector needs
        return result

    def _log_pictures(self, ds: Dataset, found: dict[str, list[Detection]],
                      truth: dict[str, list[Box]], valid: Score) -> None:
        """Detection F1 by dev book, and the dev page with the most characters with its
        boxes, as pictures in the MLflow run (kzjobs.method.figures)."""
        from kzjobs.data.format import Box
        from kzjobs.method.figures import f1_by_book_chart, log_pictures, page_with_predictions

        try:
            pictures: dict[str, Any] = {"valid_f1_by_book.png": f1_by_book_chart(
                {b: c.f1 for b, c in valid.by_book.items()},
                f"detector fold {self.fold}: detection F1 on its dev books", valid.f1)}
            if found:
                page = max(found, key=lambda i: (len(truth.get(i, ())), i))
                boxes = [Box("", d.x, d.y, d.w, d.h) for d in found[page]]
                pictures["valid_page.png"] = page_with_predictions(
                    ds.read_image(page), truth.get(page, []), boxes, ignore_code=True)
            log_pictures(pictures)
        except Exception:  # pictures are for people: a drawing bug must not fail training
            log.exception("could not draw the run's pictures")


def _part_key(prefix: str, image_id: str) -> str:
    """A per-page key; ids that are not key-safe are hashed."""
    try:
        return join(prefix, validate_key(f"{image_id}.json"))
    except UnsafeKeyError:
        return join(prefix, hashlib.sha1(image_id.encode()).hexdigest() + ".json")


def _stem(key: str) -> str:
    head, _, name = key.rpartition("/")
    stem = name.rsplit(".", 1)[0] if "." in name else name
    return f"{head}/{stem}" if head else stem


class DetectPredictJob(Job):
    """Boxes on every page of a dataset (code ``unk``), or, with ``valid_only``, the
    out-of-fold boxes of a fold's validation books, each labelled with the code of its
    best ground-truth box at IoU >= 0.5 or ``seg_fp``."""

    model: str = Field(description="Key of the detector's model.pt.")
    dataset: str = Field(description="Dataset key in the store, or a folder path/URI.")
    out: str = Field(description="Key of the boxes CSV (train.csv format).")
    valid_only: bool = Field(False, description="Out-of-fold: the fold's validation books "
                             "only, each box labelled by IoU with the ground truth (else seg_fp).")
    folds: str | None = Field(None, description="Key of folds.json (with --valid-only).")
    fold: int | None = Field(None, description="Fold (default: the model's own fold).")
    progress: bool = Field(True, description="Progress bar on stderr.")

    def run(self) -> dict[str, Any]:
        from kzjobs.core.images import ImageError
        from kzjobs.data.format import UNKNOWN, Box, write_annotations
        from kzjobs.detect.engine import Detection, detect_page, label_by_iou
        from kzjobs.detect.model import load_detector

        store = self.store
        validate_key(self.out)
        blob = store.read_bytes(self.model)
        ckpt = load_checkpoint(blob)
        ds = Dataset.open(self.dataset, store)
        image_ids, fold = self._image_ids(ds, ckpt)

        stem = _stem(self.out)
        parts, quarantine_key = f"{stem}.parts", beside(self.out)
        meta = {"model": self.model, "model_sha256": hashlib.sha256(blob).hexdigest(),
                "profile": self.profile.name}
        meta_key = join(parts, "_meta.json")
        if store.exists(meta_key) and store.read_json(meta_key) != meta:
            log.warning("parts under %s come from another model: starting over", parts)
            for key in store.list(parts):
                store.delete(key)
        store.write_json(meta_key, meta)
        done = set(store.list(parts))
        todo = [i for i in image_ids if _part_key(parts, i) not in done]

        seconds = 0.0
        if todo:
            import sys

            from tqdm import tqdm

            config = self.profile.detect
            device = _setup_torch(config)
            model, _ = load_detector(ckpt, config, device)
            started = time.perf_counter()
            for image_id in tqdm(todo, desc="detect", file=sys.stderr, disable=not self.progress,
                                 dynamic_ncols=True):
                try:
                    image = ds.read_image(image_id)
                except (ImageError, KeyError) as exc:
                    part = {"image_id": image_id,
                            "error": getattr(exc, "reason", None) or str(exc)}
                else:
                    dets = detect_page(model, image, config, device, amp=config.amp)
                    part = {"image_id": image_id,
                            "boxes": [[d.x, d.y, d.w, d.h, round(d.score, 5)] for d in dets]}
                store.write_json(_part_key(parts, image_id), part)
            seconds = time.perf_counter() - started  # the pages: read, detect, write

        # Merge in dataset order: the output does not depend on which run did which page.
        pages: dict[str, list[Box]] = {}
        quarantine: list[Quarantined] = []
        truth = ds.annotations if self.valid_only else {}
        for image_id in image_ids:
            part = store.read_json(_part_key(parts, image_id))
            if "error" in part:
                quarantine.append(Quarantined(item=image_id, reason=part["error"], stage=STAGE))
                continue
            dets = [Detection(*b) for b in part["boxes"]]
            if self.valid_only:
                pages[image_id] = label_by_iou(dets, truth.get(image_id, []))
            else:
                pages[image_id] = [Box(UNKNOWN, d.x, d.y, d.w, d.h) for d in dets]
        store.write_bytes(self.out, write_annotations(pages))
        write_quarantine(store, quarantine_key, quarantine)
        result: dict[str, Any] = {
            "out": self.out,
            "model": self.model,
            "pages": len(pages),
            "boxes": sum(len(b) for b in pages.values()),
            "predicted_this_run": len(todo),
            "seconds": round(seconds, 2),
            "quarantined": len(quarantine),
            "quarantine": quarantine_key,
        }
        if self.valid_only:
            from kzjobs.data.format import SEG_FP, boxes_to_points
            from kzjobs.method.metric import score

            valid = score({i: truth[i] for i in image_ids}, boxes_to_points(pages),
                          ignore_code=True)
            result["fold"] = fold
            result["valid"] = valid.as_dict()
            result["seg_fp"] = sum(b.code == SEG_FP for p in pages.values() for b in p)
        return result

    def _image_ids(self, ds: Dataset, ckpt: dict[str, Any]) -> tuple[list[str], int | None]:
        """The pages to predict, and the fold when they are a fold's validation books."""
        if not self.valid_only:
            return ds.image_ids(), None
        if not ds.labelled:
            raise ValueError(f"--valid-only needs a labelled dataset; {ds.uri} has no train.csv")
        if self.folds is None:
            raise ValueError("--valid-only needs --folds (the folds JSON key)")
        fold = self.fold if self.fold is not None else ckpt.get("fold")
        if fold is None:
            raise ValueError("--valid-only needs --fold")
        if ckpt.get("fold") is not None and ckpt["fold"] != fold:
            # its validation books were this model's training data: not out-of-fold
            raise ValueError(f"model {self.model} was trained for fold {ckpt['fold']}, not {fold}")
        return fold_split(ds, self.store, self.folds, fold)[1], fold
