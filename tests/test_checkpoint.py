"""Checkpoints resume only under the settings they were made with."""

from __future__ import annotations

from kzjobs.core.checkpoint import changed_settings


def test_a_checkpoint_resumes_under_changed_free_settings_only():
    saved = {"lr": 0.01, "epochs": 5, "threads": 1, "checkpoint_seconds": 600.0}
    free = {"threads", "checkpoint_seconds"}
    assert changed_settings(saved, saved | {"threads": 4, "checkpoint_seconds": 1.0}, free) == []
    assert changed_settings(saved, saved | {"lr": 0.02, "threads": 4}, free) == ["lr"]
    # A setting added since the checkpoint was made counts as changed unless it is free.
    assert changed_settings(saved, saved | {"dropout": 0.2}, free) == ["dropout"]
    assert changed_settings({"lr": 0.01}, {"lr": 0.01, "checkpoint_seconds": 600.0}, free) == []
