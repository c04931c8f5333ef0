"""The shared training loop: a run killed within an epoch resumes to the same weights,
in the same MLflow run, and only under the settings and fold it was made with."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pydantic import BaseModel

from kzjobs.core.checkpoint import load_from_store
from kzjobs.core.store import Store, open_store
from kzjobs.core.training import PHASES, Clock, Epoch, Optimization, Trainer


class Toy(BaseModel):
    lr: float = 0.1
    checkpoint_seconds: float = 1e-9  # a checkpoint after every batch


def fit(store: Store, *, crash_at: tuple[int, int] | None = None, config: Toy | None = None,
        fold: int = 0) -> tuple[torch.nn.Module, Trainer]:
    config = config or Toy()
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr)
    optimization = Optimization(optimizer, torch.optim.lr_scheduler.StepLR(optimizer, 1, 0.5),
                                torch.amp.GradScaler("cuda", enabled=False))
    trainer = Trainer(store, "toy", model, optimization, config, fold=fold, label="toy",
                      resume_free={"checkpoint_seconds"},
                      checkpoint_seconds=config.checkpoint_seconds)
    trainer.resume()

    def train(epoch: Epoch) -> dict[str, float]:
        sums = {"loss": 0.0, "batches": 0, **epoch.running}
        for batch in range(int(sums["batches"]), 4):
            if (epoch.index, batch) == crash_at:
                raise KeyboardInterrupt("killed")
            x = torch.randn(8, 3)  # the global RNG: a resume goes on from the checkpoint's
            loss = model(x).pow(2).mean()
            optimization.step(model, loss)
            sums["loss"] += loss.item()
            sums["batches"] += 1
            epoch.tick(sums)
        optimization.scheduler.step()
        return {"train_loss": sums["loss"] / 4}

    with trainer.mlflow_run("kz-test-training", "toy", {"lr": config.lr}):
        trainer.fit(2, train)
    trainer.done()
    return model, trainer


def test_a_run_killed_within_an_epoch_resumes_to_the_same_weights(tmp_path: Path) -> None:
    straight, reference = fit(open_store(tmp_path / "straight"))
    store = open_store(tmp_path / "killed")
    with pytest.raises(KeyboardInterrupt):
        fit(store, crash_at=(1, 2))
    ckpt = load_from_store(store, "toy/checkpoint.pt")
    assert (ckpt["epoch"], ckpt["within"]["running"]["batches"]) == (1, 2)

    with pytest.raises(ValueError, match=r"fold 0, changed: \['lr'\]"):
        fit(store, config=Toy(lr=0.2))
    with pytest.raises(ValueError, match=r"fold 0, changed: \[\]"):
        fit(store, fold=1)
    # A free setting may change.
    resumed_model, resumed = fit(store, config=Toy(checkpoint_seconds=0.0))

    assert resumed.resumed_from == 1 and reference.resumed_from == 0
    for name, tensor in straight.state_dict().items():
        torch.testing.assert_close(resumed_model.state_dict()[name], tensor, rtol=0, atol=0)
    assert resumed.history == reference.history
    assert resumed.mlflow_run_id == ckpt["mlflow_run_id"]  # one MLflow run across the kill
    assert not store.exists("toy/checkpoint.pt")


def test_the_clock_counts_each_phase_of_a_step_and_nothing_when_off() -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(64, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    optimization = Optimization(optimizer, torch.optim.lr_scheduler.StepLR(optimizer, 1),
                                torch.amp.GradScaler("cuda", enabled=False))

    def loader():  # a loader that works for each batch, as a real one decodes pages
        for _ in range(3):
            yield torch.randn(256, 64).sort(dim=0).values

    for device in (torch.device("cpu"), None):
        clock = Clock(device)
        batches = 0
        for x in clock.batches(loader()):
            with clock("forward"):
                loss = model(x).pow(2).mean()
            optimization.step(model, loss, clock=clock)
            batches += 1
        assert batches == 3  # every item, once
        if device is None:
            assert set(clock.seconds.values()) == {0.0}
        else:
            assert all(clock.seconds[phase] > 0 for phase in PHASES), clock.seconds
            assert clock.running() == {f"seconds_{p}": clock.seconds[p] for p in PHASES}


def test_a_resume_within_an_epoch_keeps_the_clock_apart_from_the_engine_sums() -> None:
    within = {"running": {"batches": 2, "seconds_data": 1.5, "seconds_forward": 4.0},
              "state": {}, "seconds": 6.0}
    epoch = Epoch(None, 1, within)  # type: ignore[arg-type]  # the clock needs no trainer
    clock = epoch.clock(torch.device("cpu"))
    assert epoch.running == {"batches": 2}  # what the engine sums, without the clock's
    assert clock.seconds == {"data": 1.5, "forward": 4.0, "backward": 0.0, "optimizer": 0.0}
