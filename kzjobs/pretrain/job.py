"""The ``kzjobs pretrain`` job: a ROI classifier trained on rendered glyph crops.

Its output, per kind, is ``<out>/<kind>.pt`` (a dict: the fp16 ``state_dict`` of the
whole classifier, its ``vocabulary`` of codes in head order, ``kind``, ``model_args``
and the inputs' ``fingerprint``), ``<kind>.pt.sha256`` beside it, and a version of the
MLflow model ``kz-pretrained`` (alias ``<kind>``) holding both files. A file whose
fingerprint is this run's is kept, not trained again.
"""

from __future__ import annotations

import logging
import time
from typing import Annotated, Any

from pydantic import Field

from kzjobs.core.job import Cli, Job
from kzjobs.pretrain.config import PRETRAINED
from kzjobs.pretrain.weights import REGISTERED_MODEL, SUFFIX

log = logging.getLogger(__name__)

EXPERIMENT = "kz-pretrain"
DEFAULT_OUT = PRETRAINED


class PretrainJob(Job):
    out: str = Field(DEFAULT_OUT, description="Output: a store key, or a folder / s3:// URI "
                     "(./folder for a local one).")
    kinds: Annotated[list[str] | None, Cli(("--kind",))] = Field(
        None, description="Classifier kinds (repeat; default: the profile's pretrain.kinds).")
    steps: int | None = Field(None, ge=1, description="Steps (default: the profile's).")
    register_model: Annotated[bool, Cli(("--register/--no-register",))] = Field(
        True, description="Log the weights to MLflow and register a kz-pretrained version.")
    force: bool = Field(False, description="Train even when the weights are fresh.")

    def head_args(self) -> dict[str, Any]:
        cfg = self.profile.classify
        return {"roi_size": cfg.roi_size, "hidden": cfg.hidden}

    def config(self) -> Any:
        cfg = self.profile.pretrain
        return cfg.model_copy(update={"steps": self.steps}) if self.steps else cfg

    def fingerprint(self, kind: str) -> str:
        from kzjobs.pretrain.weights import fingerprint

        return fingerprint(self.config(), kind, self.head_args())

    def run(self) -> dict[str, Any]:
        from kzjobs.data.dataset import Dataset

        target = Dataset.open(self.out, self.store).store
        summary: dict[str, Any] = {"out": self.out, "kinds": {}}
        for kind in self.kinds or list(self.profile.pretrain.kinds):
            fp = self.fingerprint(kind)
            info = f"{kind}.json"
            if not self.force and target.exists(info) and target.exists(f"{kind}.pt") \
                    and target.read_json(info).get("fingerprint") == fp:
                summary["kinds"][kind] = target.read_json(info) | {"skipped": "fresh"}
                continue
            result = self._train(kind, fp)
            data, digest = result.pop("file"), result.pop("sha256")
            target.write_bytes(f"{kind}.pt", data)
            target.write_text(f"{kind}.pt{SUFFIX}", digest)
            if self.register_model:
                result |= self._register(kind, data, digest, result)
            target.write_json(info, result)
            summary["kinds"][kind] = result
        return summary

    def _train(self, kind: str, fp: str) -> dict[str, Any]:
        import torch

        from kzjobs.classify.model import RoIClassifier
        from kzjobs.core.device import autocast, seed_everything, select_device, torch_threads
        from kzjobs.data.format import char_to_code
        from kzjobs.pretrain.glyphs import GlyphCrops, collate
        from kzjobs.pretrain.weights import save_weights
        from kzjobs.synth.fonts import split

        cfg = self.config()
        head = self.head_args()
        seed_everything(cfg.seed)
        device = select_device(self.settings.device)
        crops = GlyphCrops(cfg, cfg.steps * cfg.batch_size, cfg.seed)
        args = {"kind": kind, "n_classes": len(crops.chars), **head,
                "dropout": self.profile.classify.dropout, "frozen": []}
        model = RoIClassifier(**args).to(device)
        batches = torch.utils.data.DataLoader(crops, batch_size=cfg.batch_size,
                                              num_workers=cfg.workers, collate_fn=collate)
        optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr,
                                      weight_decay=cfg.weight_decay)
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr,
                                                       total_steps=cfg.steps, pct_start=0.15)
        start = time.perf_counter()
        history: list[dict[str, float]] = []
        with torch_threads(cfg.threads):
            loss_sum = correct = seen = 0.0
            for step, batch in enumerate(batches, 1):
                with autocast(device, cfg.amp, cpu_bf16=True):
                    logits = model(batch["images"].to(device),
                                   [b.to(device) for b in batch["boxes"]])
                targets = batch["targets"].to(device)
                loss = torch.nn.functional.cross_entropy(logits.float(), targets)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                loss_sum += float(loss.detach()) * len(targets)
                correct += float((logits.argmax(1) == targets).sum())
                seen += len(targets)
                if step % 25 == 0 or step == cfg.steps:
                    history.append({"step": step, "loss": loss_sum / seen,
                                    "accuracy": correct / seen,
                                    "seconds": time.perf_counter() - start})
                    log.info("pretrain %s step %d/%d: loss %.3f, accuracy %.3f, %.0f s",
                             kind, step, cfg.steps, loss_sum / seen, correct / seen,
                             time.perf_counter() - start)
                    loss_sum = correct = seen = 0.0
            seconds = time.perf_counter() - start
            accuracy = glyph_accuracy(model, cfg, device)
            # The dev fonts, never trained on: how far the glyphs carry to unseen hands.
            dev_accuracy = glyph_accuracy(model, cfg.model_copy(update={"fonts": split("dev")}),
                                          device)
        state = {k: v.half() if cfg.half and v.is_floating_point() else v
                 for k, v in model.state_dict().items()}
        data, digest = save_weights({
            "state_dict": state, "vocabulary": [char_to_code(c) for c in crops.chars],
            "kind": kind, "model_args": args, "fingerprint": fp,
        })
        log.info("pretrain %s: glyph accuracy %.3f (other seed), %.3f in the dev fonts, after "
                 "%.0f s", kind, accuracy, dev_accuracy, seconds)
        return {"kind": kind, "fingerprint": fp, "steps": cfg.steps, "classes": len(crops.chars),
                "fonts": list(crops.fonts), "train_seconds": round(seconds, 1),
                "glyph_accuracy": round(accuracy, 4),
                "dev_font_glyph_accuracy": round(dev_accuracy, 4), "history": history,
                "bytes": len(data), "file": data, "sha256": digest}

    def _register(self, kind: str, data: bytes, digest: str, result: dict[str, Any]
                  ) -> dict[str, Any]:
        """Log the file in an MLflow run and register it as a version of kz-pretrained
        (files as artifacts, no pickled model: loaded by kzjobs.pretrain.weights)."""
        import tempfile
        from pathlib import Path

        import mlflow

        from kzjobs.release import registry

        client = registry.client(self.settings.tracking_uri)
        experiment = registry.experiment_id(client, EXPERIMENT)
        artifact = f"pretrained-{kind}"
        with tempfile.TemporaryDirectory() as tmp, \
                mlflow.start_run(experiment_id=experiment, run_name=f"pretrain-{kind}") as run:
            folder = Path(tmp) / artifact
            folder.mkdir()
            (folder / f"{kind}.pt").write_bytes(data)
            (folder / f"{kind}.pt{SUFFIX}").write_text(digest)
            mlflow.log_params({"kind": kind, "profile": self.profile.name,
                               **{k: str(v) for k, v in self.config().model_dump().items()}})
            for point in result["history"]:
                mlflow.log_metrics({"train_loss": point["loss"],
                                    "train_accuracy": point["accuracy"]}, step=point["step"])
            mlflow.log_metrics({"glyph_accuracy": result["glyph_accuracy"],
                                "dev_font_glyph_accuracy": result["dev_font_glyph_accuracy"],
                                "train_seconds": result["train_seconds"]})
            mlflow.log_artifacts(str(folder), artifact)
            source = f"{run.info.artifact_uri}/{artifact}"
            run_id = run.info.run_id
        if not client.search_registered_models(f"name = '{REGISTERED_MODEL}'"):
            client.create_registered_model(REGISTERED_MODEL)
        tags = {"kind": kind, "fingerprint": result["fingerprint"],
                "sha256": digest.split()[0], "git_commit": registry.git_commit()}
        version = client.create_model_version(REGISTERED_MODEL, source, run_id=run_id, tags=tags)
        client.set_registered_model_alias(REGISTERED_MODEL, kind, version.version)
        return {"mlflow_run_id": run_id, "model": f"models:/{REGISTERED_MODEL}/{version.version}"}


def glyph_accuracy(model: Any, cfg: Any, device: Any) -> float:
    """Top-1 accuracy on crops rendered with another seed (in ``cfg``'s fonts)."""
    import torch

    from kzjobs.pretrain.glyphs import GlyphCrops, collate

    if not cfg.eval_samples:
        return float("nan")
    crops = GlyphCrops(cfg, cfg.eval_samples, cfg.seed + 1_000_003)
    right = 0
    model.eval()
    with torch.inference_mode():
        for batch in torch.utils.data.DataLoader(crops, batch_size=cfg.batch_size,
                                                 collate_fn=collate):
            logits = model(batch["images"].to(device), [b.to(device) for b in batch["boxes"]])
            right += int((logits.argmax(1).cpu() == batch["targets"]).sum())
    model.train()
    return right / len(crops)


def stale_kinds(profile_name: str, store: Any = None, out: str = DEFAULT_OUT) -> list[str]:
    """The kinds whose pretrained file the profile starts from in the store at ``out``
    (``<out>/<kind>.pt`` as a classifier's or the detector's weights) and which are
    missing or stale there: what ``kz_retrain``'s pretrain task has to train. The store
    (default: the settings') is opened only for a profile that starts from it."""
    from kzjobs.core.profile import load_profile
    from kzjobs.core.store import join

    profile = load_profile(profile_name)
    refs = [*profile.classify.weights.values(), profile.detect.backbone_weights or ""]
    kinds = sorted({k for k in (*profile.classify.kinds, *profile.pretrain.kinds)
                    if join(out, f"{k}.pt") in refs})
    if not kinds:
        return []
    job = PretrainJob(profile_name=profile_name, out=out)
    store = store or job.store
    stale = []
    for kind in kinds:
        info = join(out, f"{kind}.json")
        fresh = store.exists(join(out, f"{kind}.pt")) and store.exists(info) and \
            store.read_json(info).get("fingerprint") == job.fingerprint(kind)
        if not fresh:
            stale.append(kind)
    return stale
