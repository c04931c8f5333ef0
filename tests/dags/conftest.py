"""An Airflow home with a migrated metadata DB, and DAG runs in subprocesses.

The runner is the demo's (:mod:`kzjobs.demo`): ``dag.test()`` in a fresh process,
because Airflow reads its configuration once per process.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kzjobs import demo

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "dags"


def airflow_env(home: Path, **extra: str) -> dict[str, str]:
    env = demo.airflow_env(home, **extra)
    for key in [k for k in env if k.startswith("KZ_") and k not in extra]:
        del env[key]  # only what the test gives
    return env


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A metadata DB migrated once per session (SQLite; Airflow's own CLI does it)."""
    home = tmp_path_factory.mktemp("airflow")
    demo.migrate(airflow_env(home))
    return home


@pytest.fixture
def run_dag(airflow_home: Path):
    """``run_dag(dag_id, conf, **env) -> {"state", "tasks", "xcom"}`` through ``dag.test()``."""

    def run(dag_id: str, conf: dict, tasks: list[str] | None = None, **env: str) -> dict:
        return demo.run_dag(dag_id, conf, airflow_env(airflow_home, **env), timeout=3000,
                            tasks=tasks)

    return run
