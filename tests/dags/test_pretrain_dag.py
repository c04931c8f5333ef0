"""kz_retrain's pretrain task, with ``dag.test()`` on the part of the DAG up to it: it
trains the starting weights when they are missing, and is skipped when they are fresh."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kzjobs.core.settings import get_settings
from kzjobs.core.store import open_store
from kzjobs.pretrain.config import PRETRAINED
from tests.pretrain.test_pretrain import profile_file


@pytest.mark.slow
def test_kz_retrain_pretrains_only_when_missing_or_stale(tmp_path: Path, run_dag):
    store = open_store(tmp_path / "store")
    path = profile_file(tmp_path)
    body = yaml.safe_load(Path(path).read_text())
    body["classify"]["weights"] = {"resnet18": f"{PRETRAINED}/resnet18.pt"}
    Path(path).write_text(yaml.safe_dump(body))
    env = {"KZ_HOME": str(get_settings().home), "KZ_STORE": store.uri, "KZ_LAUNCHER": "local"}
    conf = {"profile": path, "dataset": "datasets/train", "heldout": "datasets/heldout"}

    first = run_dag("kz_retrain", conf, tasks=["pretrain"], **env)
    assert first["state"] == "success", first
    assert first["tasks"]["pretrain[0]"] == "success"
    assert first["xcom"]["pretrain[0]"]["kinds"]["resnet18"]["classes"] == 12
    assert store.exists(f"{PRETRAINED}/resnet18.pt.sha256")

    second = run_dag("kz_retrain", conf, tasks=["pretrain"], **env)
    assert second["state"] == "success", second
    assert second["tasks"]["pretrain"] == "skipped"  # fresh: no job mapped
