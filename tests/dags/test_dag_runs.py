"""Each DAG run end to end with ``dag.test()``, the tiny profile and the local launcher:
Airflow runs the real ``kzjobs`` commands as subprocesses on a migrated metadata DB."""

from __future__ import annotations

from kzjobs.core.settings import get_settings
from tests.conftest import register_test_bundle


def test_kz_promote_runs_the_promote_job(tmp_path, run_dag):
    from kzjobs.core.store import open_store
    from kzjobs.release.registry import get_version

    store = open_store(tmp_path / "store")
    env = {"KZ_HOME": str(get_settings().home), "KZ_STORE": store.uri, "KZ_LAUNCHER": "local"}
    v1 = register_test_bundle(store, "a", 0.5)
    first = run_dag("kz_promote", {"profile": "tiny"}, **env)
    assert first["state"] == "success", first
    summary = first["xcom"]["promote"]  # the job's JSON summary, through the local launcher
    assert (summary["decision"], summary["champion_after"]) == ("promoted", v1)
    assert int(get_version("champion").version) == v1

    v2 = register_test_bundle(store, "b", 0.4)  # worse
    second = run_dag("kz_promote", {"profile": "tiny"}, **env)
    assert second["xcom"]["promote"]["decision"] == "rejected"
    assert int(get_version("champion").version) == v1
    assert get_version(v2).tags["promotion.decision"] == "rejected"
    assert second["xcom"]["plan"] == ["--version", "candidate", "--profile", "tiny"]


def test_a_failing_job_fails_its_task_loudly(tmp_path, run_dag):
    """No version to promote: the job exits non-zero and the task and the run fail."""
    env = {"KZ_HOME": str(get_settings().home), "KZ_STORE": str(tmp_path / "store"),
           "KZ_LAUNCHER": "local"}
    out = run_dag("kz_promote", {"profile": "tiny", "version": "7"}, **env)
    assert out["state"] == "failed"
    assert out["tasks"]["promote"] == "failed" and out["tasks"]["plan"] == "success"
