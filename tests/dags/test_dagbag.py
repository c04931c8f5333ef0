"""The DAG files parse with no import errors, import no heavy module, and have the
shape of the product (mapped training, assets between the DAGs, one promotion at a time)."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys

import pytest

from .conftest import DAGS, airflow_env

PARSE = r"""
import json, sys
from airflow.dag_processing.dagbag import DagBag
from airflow.sdk.definitions.mappedoperator import MappedOperator
bag = DagBag(dag_folder=sys.argv[1])
heavy = ("torch", "torchvision", "pandas", "great_expectations", "mlflow", "lightgbm", "xgboost")
out = {"errors": {k: str(v) for k, v in bag.import_errors.items()}, "dags": {},
       "heavy": sorted(m for m in heavy if m in sys.modules)}
def kind(t):
    return (t.operator_class if isinstance(t, MappedOperator) else type(t)).__name__
for dag in bag.dags.values():
    cond = getattr(dag.timetable, "asset_condition", None)
    out["dags"][dag.dag_id] = {
        "schedule": dag.schedule if isinstance(dag.schedule, str) else None,
        "assets": [a.name for a in cond.objects] if cond is not None else [],
        "max_active_runs": dag.max_active_runs,
        "params": sorted(dag.params),
        "tasks": {t.task_id: {
            "type": kind(t),
            "mapped": isinstance(t, MappedOperator),
            "upstream": sorted(t.upstream_task_ids),
            "outlets": [o.name for o in (t.outlets or [])],
            "trigger_rule": getattr(t.trigger_rule, "value", t.trigger_rule),
        } for t in dag.tasks},
    }
print("@@PARSE@@" + json.dumps(out))
"""


def parse(airflow_home, **env: str) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", PARSE, str(DAGS)],
        env=airflow_env(airflow_home, **env), capture_output=True, text=True, timeout=600,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("@@PARSE@@"):
            return json.loads(line.removeprefix("@@PARSE@@"))
    raise AssertionError(proc.stderr[-4000:])


@pytest.fixture(scope="module")
def local(airflow_home) -> dict:
    return parse(airflow_home, KZ_LAUNCHER="local")


def test_no_import_errors_and_no_heavy_imports(local):
    assert local["errors"] == {}
    assert set(local["dags"]) == {"kz_retrain", "kz_recognize", "kz_promote"}
    assert local["heavy"] == []  # torch, pandas, GX, mlflow... stay out of parsing


def test_retrain_shape(local):
    dag = local["dags"]["kz_retrain"]
    tasks = dag["tasks"]
    assert dag["schedule"] == "@weekly"
    assert {"profile", "dataset", "heldout", "incoming"} <= set(dag["params"])
    for mapped in ("pretrain", "detect_train", "detect_oof", "classify_train",
                   "detect_incoming", "classify_incoming", "finetune"):
        assert tasks[mapped]["mapped"], mapped
        assert tasks[mapped]["type"] == "KzLocalJobOperator"
        assert f"{mapped}_args" in tasks[mapped]["upstream"]
    # Pretraining runs only when its weights are stale; skipped, it must not skip the rest.
    assert tasks["validate"]["trigger_rule"] == "none_failed"
    order = ["pretrain", "validate", "folds", "detect_train", "detect_oof", "merge_oof",
             "classify_train"]
    for before, after in itertools.pairwise(order):
        assert before in tasks[after]["upstream"], (before, after)
    assert {"classify_train", "detect_incoming"} <= set(tasks["classify_incoming"]["upstream"])
    assert {"classify_train", "finetune"} <= set(tasks["level2"]["upstream"])
    assert tasks["level2"]["trigger_rule"] == "none_failed_min_one_success"
    chain = ["level2", "bundle", "evaluate", "register"]
    for before, after in itertools.pairwise(chain):
        assert before in tasks[after]["upstream"]
    assert tasks["register"]["outlets"] == ["kz_candidate"]


def test_recognize_and_promote_shape(local):
    rec = local["dags"]["kz_recognize"]
    assert rec["assets"] == ["kz_incoming"] and "collection" in rec["params"]
    assert rec["tasks"]["recognize"]["mapped"]
    assert "validate" in rec["tasks"]["recognize_args"]["upstream"] or \
        "validate" in rec["tasks"]["recognize"]["upstream"]
    assert rec["tasks"]["merge"]["outlets"] == ["kz_predictions"]

    promote = local["dags"]["kz_promote"]
    assert promote["assets"] == ["kz_candidate"]  # runs after every registered candidate
    assert promote["max_active_runs"] == 1  # ...one at a time
    assert {"version", "heldout"} <= set(promote["params"])


@pytest.mark.parametrize(
    ("launcher", "operator"), [("kubernetes", "KzPodOperator"), ("docker", "KzDockerOperator")]
)
def test_the_same_dags_with_the_other_launchers(airflow_home, launcher, operator):
    parsed = parse(airflow_home, KZ_LAUNCHER=launcher)
    assert parsed["errors"] == {}
    assert parsed["heavy"] == []
    tasks = parsed["dags"]["kz_retrain"]["tasks"]
    assert tasks["detect_train"]["type"] == operator
    assert tasks["plan"]["type"] == "_PythonDecoratedOperator"  # plans stay in Airflow
