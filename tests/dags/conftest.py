"""An Airflow home with a migrated metadata DB, and a runner for DAGs in subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"
HERE = Path(__file__).resolve().parent


def airflow_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "KZ_"))}
    env |= {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "GX_ANALYTICS_ENABLED": "false",
        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
        "PYTHONPATH": str(REPO),
    }
    return env | extra


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A metadata DB migrated once per session (SQLite; Airflow's own CLI does it)."""
    home = tmp_path_factory.mktemp("airflow")
    subprocess.run(
        [str(Path(sys.executable).with_name("airflow")), "db", "migrate"],
        env=airflow_env(home), check=True, capture_output=True, timeout=600,
    )
    return home


@pytest.fixture
def run_dag(airflow_home: Path):
    """``run_dag(dag_id, conf, **env) -> {"state", "tasks", "xcom"}`` through ``dag.test()``."""

    def run(dag_id: str, conf: dict, **env: str) -> dict:
        proc = subprocess.run(
            [sys.executable, str(HERE / "dagrun.py"), dag_id, json.dumps(conf)],
            env=airflow_env(airflow_home, **env), capture_output=True, text=True, timeout=3000,
        )
        for line in reversed(proc.stdout.splitlines()):
            if line.startswith("@@DAGRUN@@"):
                return json.loads(line.removeprefix("@@DAGRUN@@"))
        raise AssertionError(
            f"dag {dag_id} did not report (exit {proc.returncode}):\n"
            f"{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
        )

    return run
