"""Resumable training, one loop for every stage: the checkpoint that resumes a run, when
it is written, the MLflow run it logs to, and the epoch loop.

A stage's job keeps what is its own (data, model, evaluation, outputs) and gives
:class:`Trainer` its model and :class:`Optimization`. Its engine's ``train_one_epoch``
takes an :class:`EngineSettings`, steps with :meth:`Optimization.step` and reports its
running sums to :meth:`Epoch.tick`, which checkpoints within a long epoch.

The checkpoint (``<out>/checkpoint.pt``, :data:`CHECKPOINT_FORMAT`) holds the model,
optimizer, scheduler and scaler states, ``epoch`` (epochs done), ``within`` (where a
checkpoint within the next epoch left it: the engine's running sums under ``running``,
its seconds and the stage's own values), ``rng`` (torch, CUDA, NumPy and Python states
when it was written), ``history``, ``train_seconds``, ``mlflow_run_id``, the config it
resumes under, ``fold`` and the stage's identity (e.g. the vocabulary).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kzjobs.core.checkpoint import (
    changed_settings,
    load_from_store,
    rng_state,
    save_to_store,
    set_rng_state,
)
from kzjobs.core.store import Store, join

if TYPE_CHECKING:
    import torch
    from mlflow import ActiveRun
    from pydantic import BaseModel

log = logging.getLogger(__name__)

PHASES = ("data", "forward", "backward", "optimizer")
PHASE_KEYS = tuple(f"seconds_{phase}" for phase in PHASES)  # as Clock.running names them

CHECKPOINT_FORMAT = "kzjobs.core.training/1"


def config_params(config: BaseModel, prefix: str = "") -> dict[str, str]:
    """A profile section as MLflow params (lists joined by commas)."""
    return {prefix + k: ",".join(map(str, v)) if isinstance(v, list | tuple) else str(v)
            for k, v in config.model_dump(mode="json").items()}


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """How an engine runs its model: the settings of ``train_one_epoch`` and ``evaluate``."""

    device: torch.device
    amp: bool = True  # mixed precision where kzjobs.core.device.autocast allows it
    progress: bool = True  # a tqdm bar
    grad_clip: float | None = None  # max gradient norm


@dataclass(slots=True)
class Optimization:
    """What a training step updates besides the model."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler  # kzjobs.core.device.grad_scaler: active only on CUDA with amp

    def step(self, model: torch.nn.Module, loss: torch.Tensor,
             grad_clip: float | None = None, clock: Clock | None = None) -> None:
        """Backward and one optimizer step (the scheduler is the engine's to step), each
        timed on ``clock`` when given. A disabled scaler passes the loss and the step
        through unchanged."""
        import torch

        clock = clock or Clock(None)
        with clock("backward"):
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
        with clock("optimizer"):
            if grad_clip:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def state_dict(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])


class Clock:
    """Where an epoch's training time goes: seconds in each of :data:`PHASES` (waiting for
    the loader's next batch, the forward pass with its loss, backward, the optimizer
    step), logged as ``train_seconds_<phase>``. On CUDA each phase ends with a
    synchronize, so a kernel is counted in the phase that launched it. ``device=None``
    measures nothing."""

    def __init__(self, device: torch.device | None, seconds: Mapping[str, float] | None = None
                 ) -> None:
        self.on = device is not None
        self._sync = self.on and device.type == "cuda"
        self.seconds = dict.fromkeys(PHASES, 0.0) | dict(seconds or {})

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        if not self.on:
            yield
            return
        start = time.perf_counter()
        yield
        if self._sync:
            import torch

            torch.cuda.synchronize()
        self.seconds[phase] += time.perf_counter() - start

    def batches(self, loader: Iterable[Any]) -> Iterator[Any]:
        """``loader``'s items, the wait for each counted as ``data``."""
        items = iter(loader)
        while True:
            with self("data"):
                item = next(items, _END)
            if item is _END:
                return
            yield item

    def running(self) -> dict[str, float]:
        """The seconds as running sums a checkpoint within the epoch keeps."""
        return {f"seconds_{k}": v for k, v in self.seconds.items()}


_END = object()


class Epoch:
    """One epoch of :meth:`Trainer.fit`. On a resume within it, ``running`` holds the
    engine's sums and ``state`` the stage's values (e.g. a loader seed) as a checkpoint
    left them; a stage puts in ``state`` what it needs to make the same batches again."""

    def __init__(self, trainer: Trainer, index: int, within: Mapping[str, Any] | None) -> None:
        self.index = index
        self.resumed = within is not None
        self.running: dict[str, float] = dict(within["running"]) if within else {}
        self.state: dict[str, Any] = dict(within["state"]) if within else {}
        self._trainer = trainer
        self._before = within["seconds"] if within else 0.0
        self._start = self._saved = time.monotonic()

    def seconds(self) -> float:
        """Seconds trained in this epoch, those before a resume within it included."""
        return self._before + time.monotonic() - self._start

    def clock(self, device: torch.device) -> Clock:
        """The epoch's :class:`Clock`, with the seconds a checkpoint within it kept (taken
        out of ``running``, which holds the engine's own sums)."""
        kept = {k.removeprefix("seconds_"): self.running.pop(k)
                for k in [k for k in self.running if k.startswith("seconds_")]}
        return Clock(device, kept)

    def restore_rng(self) -> None:
        """After a stage has made again the items a checkpoint within this epoch had
        trained on, the global random generators stand where the checkpoint left them."""
        if self.resumed:
            set_rng_state(self._trainer.rng)

    def tick(self, sums: Mapping[str, float]) -> None:
        """Called after every batch with the engine's running sums: checkpoints every
        ``checkpoint_seconds`` (0: only at the end of an epoch)."""
        every = self._trainer.checkpoint_seconds
        if every and time.monotonic() - self._saved >= every:
            self._trainer.save({"running": dict(sums), "state": self.state,
                                "seconds": self.seconds()})
            log.info("%s epoch %d: checkpointed at batch %d", self._trainer.label, self.index,
                     sums.get("batches", 0))
            self._saved = time.monotonic()


class Trainer:
    """The resumable part of a training job: checkpoint, resume, MLflow run, epoch loop."""

    def __init__(self, store: Store, out: str, model: torch.nn.Module,
                 optimization: Optimization, config: BaseModel, *, fold: int, label: str,
                 resume_free: set[str], checkpoint_seconds: float = 0.0,
                 identity: Mapping[str, Any] | None = None) -> None:
        self.store, self.key = store, join(out, "checkpoint.pt")
        self.model, self.optimization = model, optimization
        self.config = config.model_dump(mode="json")
        self.fold, self.label = fold, label
        self.resume_free = resume_free  # settings that may change without changing results
        self.checkpoint_seconds = checkpoint_seconds
        self.identity = dict(identity or {})  # what else a checkpoint must match
        self.epoch = 0  # epochs done
        self.resumed_from = 0
        self.history: list[dict[str, float]] = []
        self.train_seconds = 0.0
        self.mlflow_run_id: str | None = None
        self.within: dict[str, Any] | None = None
        self.rng: dict[str, Any] | None = None

    def resume(self) -> bool:
        """Load the checkpoint, if there is one, and set the global random generators to
        its state; a checkpoint of another fold, identity or settings is refused."""
        if not self.store.exists(self.key):
            return False
        ckpt = load_from_store(self.store, self.key)
        if ckpt.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"checkpoint {self.key} was written by another version "
                             f"({ckpt.get('format')}); delete it to start over")
        changed = changed_settings(ckpt["config"], self.config, self.resume_free)
        changed += [k for k, v in self.identity.items() if ckpt.get(k) != v]
        if changed or ckpt.get("fold") != self.fold:
            raise ValueError(
                f"checkpoint {self.key} was made with other settings (fold {ckpt.get('fold')}, "
                f"changed: {changed}); delete it or use another --out")
        self.model.load_state_dict(ckpt["model"])
        self.optimization.load_state_dict(ckpt)
        self.epoch = self.resumed_from = ckpt["epoch"]
        self.history, self.train_seconds = ckpt["history"], ckpt["train_seconds"]
        self.mlflow_run_id, self.within, self.rng = (ckpt["mlflow_run_id"], ckpt["within"],
                                                     ckpt["rng"])
        set_rng_state(self.rng)
        log.info("resuming %s at epoch %d, batch %d", self.label, self.epoch,
                 self.within["running"].get("batches", 0) if self.within else 0)
        return True

    def save(self, within: dict[str, Any] | None = None) -> None:
        save_to_store(self.store, self.key, {
            "format": CHECKPOINT_FORMAT,
            "model": self.model.state_dict(),
            **self.optimization.state_dict(),
            "epoch": self.epoch,
            "within": within,
            "rng": rng_state(),
            "history": self.history,
            "train_seconds": self.train_seconds,
            "mlflow_run_id": self.mlflow_run_id,
            "config": self.config,
            "fold": self.fold,
            **self.identity,
        })

    @contextlib.contextmanager
    def mlflow_run(self, experiment: str, run_name: str, params: Mapping[str, Any]
                   ) -> Iterator[ActiveRun]:
        """The checkpoint's MLflow run on resume, else a new one with ``params``."""
        import mlflow

        from kzjobs.release import registry

        # Created with the configured artifact root: a database-backed run's artifacts
        # would otherwise go to ./mlruns of whatever folder the job runs in.
        experiment_id = registry.experiment_id(registry.client(), experiment)
        run = None
        if self.mlflow_run_id is not None:
            try:
                run = mlflow.start_run(run_id=self.mlflow_run_id)
            except mlflow.exceptions.MlflowException:
                log.warning("MLflow run %s not found; starting a new run", self.mlflow_run_id)
        if run is None:
            run = mlflow.start_run(experiment_id=experiment_id, run_name=run_name)
            mlflow.log_params(params)
        self.mlflow_run_id = run.info.run_id
        with run:
            yield run

    def fit(self, epochs: int, train: Callable[[Epoch], dict[str, float]],
            evaluate: Callable[[int], dict[str, float]] | None = None) -> None:
        """Train the epochs not done, in the active MLflow run: ``train`` one epoch (its
        metrics, named ``train_*``), then ``evaluate`` (``valid_*``); each epoch's metrics
        go to the history and MLflow, and a checkpoint follows."""
        import mlflow

        for index in range(self.epoch, epochs):
            within, self.within = self.within, None
            epoch = Epoch(self, index, within)
            stats = train(epoch)
            seconds = epoch.seconds()
            self.train_seconds += seconds
            # One line an epoch: what a DAG task's log (and the demo) shows of a long job.
            log.info("%s epoch %d/%d: loss %.4f in %.0f s", self.label, index + 1, epochs,
                     stats.get("train_loss", float("nan")), seconds)
            if evaluate is not None:
                stats |= evaluate(index)
            # Seconds go to MLflow, not to the history: a resumed run's history is the same
            # to the bit as an uninterrupted one's, and timings never are.
            timed = [k for k in stats if k.endswith(PHASE_KEYS)]
            timing = {k: stats.pop(k) for k in timed}
            mlflow.log_metrics(stats | timing | {"epoch_seconds": seconds}, step=index)
            self.history.append({"epoch": index, **stats})
            self.epoch = index + 1
            self.save()

    def done(self) -> None:
        """The model is written: the checkpoint has served."""
        self.store.delete(self.key)
