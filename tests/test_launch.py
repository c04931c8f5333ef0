"""The launcher: one kzjobs command as a local process, a Docker container or a pod."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime

import pytest

from kzjobs.orchestrate.connections import connection_env
from kzjobs.orchestrate.launch import (
    JOB_RESOURCES,
    JOB_UID,
    POD_SUMMARY_FILE,
    SCRATCH,
    SCRATCH_ENV,
    LaunchConfig,
    job,
    load_config,
    mapped_job,
    resources_for,
)
from kzjobs.orchestrate.runner import JobFailed, parse_summary, run_local

K8S = {
    "launcher": "kubernetes",
    "image": "registry.example/kzjobs-job:1.2.3",
    "env": {"KZ_STORE": "s3://kz-store", "KZ_MLFLOW_URI": "http://mlflow:5000"},
    "kubernetes": {
        "namespace": "kz",
        "gpu_node_selector": {"pool": "a100"},
        "cpu_node_selector": {"pool": "cpu"},
        "secrets": [{"env": "AWS_SECRET_ACCESS_KEY", "secret": "kz-s3", "key": "secret"}],
    },
}


@pytest.fixture
def dataset(tmp_path):
    """A labelled dataset of three books, enough for the real ``folds`` job."""
    store = tmp_path / "store"
    rows = ["image_id,labels"] + [f"{b}_00{i},U+3042 1 1 5 5" for b in "abc" for i in (1, 2)]
    (store / "train").mkdir(parents=True)
    (store / "train" / "train.csv").write_text("\n".join(rows) + "\n")
    return store


def test_gpu_need_per_command():
    assert resources_for("detect train").gpu == 1
    assert resources_for("classify  train").gpu == 1  # spacing does not matter
    assert resources_for("recognize").gpu == 1
    assert resources_for("folds").gpu == 0
    assert resources_for("validate batch") == JOB_RESOURCES["validate"]  # longest prefix
    assert resources_for("level2 train").gpu == 0
    with pytest.raises(KeyError, match="unknown job command"):
        resources_for("train everything")
    cfg = LaunchConfig(image="x", resources={"folds": {"gpu": 2}})
    assert cfg.resources_for("folds").gpu == 2  # configuration overrides the table


def test_summary_parsing():
    assert parse_summary('{\n  "a": 1\n}\n') == {"a": 1}
    docker_log = 'epoch 1 loss 0.3\n{"not": "closed"\n{\n  "out": "k",\n  "n": [1, 2]\n}'
    assert parse_summary(docker_log) == {"out": "k", "n": [1, 2]}
    assert parse_summary("") is None
    with pytest.raises(ValueError, match="no JSON summary"):
        parse_summary("only logs\nno json")


def test_local_process_returns_the_summary_and_streams_the_log(dataset):
    lines: list[str] = []
    out = run_local("folds", ["train", "--out", "folds.json", "--profile", "tiny"],
                    env={"KZ_STORE": str(dataset)}, log=lines.append)
    assert out["n_folds"] == 2 and set(out["books"]) == {"a", "b", "c"}
    assert json.loads((dataset / "folds.json").read_text())["books"] == out["books"]

    with pytest.raises(JobFailed) as failed:
        run_local("folds", ["train", "--profile", "no-such-profile"],
                  env={"KZ_STORE": str(dataset)}, log=lines.append)
    assert failed.value.returncode != 0
    assert "unknown profile 'no-such-profile'" in failed.value.tail
    assert "exit code" in str(failed.value)
    assert "unknown profile" in str(failed.value).splitlines()[0]  # the error, up front
    assert failed.value.tail.splitlines()[-1] in lines  # the log was streamed as it came


def test_a_job_writes_its_summary_where_a_pod_sidecar_reads_it(dataset, tmp_path):
    summary = tmp_path / "airflow" / "xcom" / "return.json"
    proc = subprocess.run(
        [sys.executable, "-m", "kzjobs", "folds", "train", "--profile", "tiny"],
        env={**os.environ, "KZ_STORE": str(dataset), "KZ_SUMMARY_FILE": str(summary)},
        capture_output=True, text=True, check=True,
    )
    assert json.loads(summary.read_text()) == json.loads(proc.stdout)


def test_launcher_choice_from_settings_and_airflow_variables(monkeypatch):
    monkeypatch.delenv("AIRFLOW_VAR_KZ_LAUNCHER", raising=False)
    monkeypatch.delenv("AIRFLOW_VAR_KZ_LAUNCH", raising=False)
    from kzjobs.core.settings import get_settings

    assert load_config().launcher == "local"  # the embedded default
    monkeypatch.setenv("KZ_LAUNCHER", "docker")
    get_settings.cache_clear()
    assert load_config().launcher == "docker"
    monkeypatch.setenv("AIRFLOW_VAR_KZ_LAUNCH", json.dumps(K8S | {"launcher": "local"}))
    cfg = load_config()
    assert (cfg.launcher, cfg.image, cfg.kubernetes.namespace) == ("local", K8S["image"], "kz")
    monkeypatch.setenv("AIRFLOW_VAR_KZ_LAUNCHER", "kubernetes")  # the Variable wins
    assert load_config().launcher == "kubernetes"
    assert load_config(use_airflow=False).launcher == "docker"


def _in_dag(build):
    from airflow.sdk import DAG

    with DAG("t", schedule=None, start_date=datetime(2026, 1, 1)) as dag:
        ops = build()
    return dag, ops


def test_kubernetes_pod_spec_for_a_gpu_job():
    cfg = LaunchConfig.model_validate(K8S)
    _, op = _in_dag(lambda: job("detect", "detect train", ["--fold", "{{ params.fold }}"],
                                config=cfg, params={"fold": 1}))
    op.render_template_fields({"params": {"fold": 1}})
    pod = op.build_pod_request_obj(dry_run=True)
    c = pod.spec.containers[0]
    assert c.image == "registry.example/kzjobs-job:1.2.3"
    assert c.command == ["kzjobs", "detect", "train"] and c.args == ["--fold", "1"]
    assert c.resources.limits["nvidia.com/gpu"] == "1"
    assert c.resources.requests == {"cpu": "4", "memory": "24Gi"}
    assert pod.spec.node_selector == {"pool": "a100"}
    assert [(t.key, t.operator, t.effect) for t in pod.spec.tolerations] == [
        ("nvidia.com/gpu", "Exists", "NoSchedule")]
    assert pod.metadata.namespace == "kz"
    env = {e.name: e for e in c.env}
    assert env["KZ_STORE"].value == "s3://kz-store"
    assert env["OMP_NUM_THREADS"].value == "4"  # the job's CPUs, not the node's cores
    assert env["KZ_SUMMARY_FILE"].value == POD_SUMMARY_FILE  # the XCom sidecar's file
    ref = env["AWS_SECRET_ACCESS_KEY"].value_from.secret_key_ref
    assert (ref.name, ref.key) == ("kz-s3", "secret")  # a Secret, not a value
    assert {m.mount_path for m in c.volume_mounts} >= {"/dev/shm"}
    assert any(ct.name == "airflow-xcom-sidecar" for ct in pod.spec.containers)


def test_kubernetes_pod_spec_for_a_cpu_job_and_a_mapped_one():
    cfg = LaunchConfig.model_validate(K8S)
    _, op = _in_dag(lambda: job("folds", "folds", ["d", "--out", "f.json"], config=cfg))
    pod = op.build_pod_request_obj(dry_run=True)
    c = pod.spec.containers[0]
    assert "nvidia.com/gpu" not in (c.resources.limits or {})
    assert not pod.spec.tolerations and pod.spec.node_selector == {"pool": "cpu"}

    from airflow.sdk import task

    def build():
        @task
        def plan() -> dict:
            return {"classify_train": [["--fold", "0"], ["--fold", "1"]]}

        return mapped_job("classify_train", "classify train", plan(), config=cfg)

    dag, mapped = _in_dag(build)
    assert mapped.partial_kwargs["container_resources"].limits["nvidia.com/gpu"] == "1"
    assert mapped.partial_kwargs["cmds"] == ["kzjobs", "classify", "train"]
    assert "arguments" in mapped.expand_input.value
    assert {t.task_id for t in dag.tasks} == {"plan", "classify_train_args", "classify_train"}


def test_docker_container_spec():
    cfg = LaunchConfig.model_validate(
        K8S | {"launcher": "docker", "docker": {"network_mode": "kz", "mounts": {"/d": "/data"}}}
    )
    _, gpu = _in_dag(lambda: job("detect", "detect train", ["--fold", "0"], config=cfg))
    assert gpu.image == K8S["image"]
    assert gpu.entrypoint == ["kzjobs", "detect", "train"] and gpu.command == ["--fold", "0"]
    [request] = gpu.device_requests
    assert (request.count, request.capabilities) == (1, [["gpu"]])
    assert gpu.shm_size == 8 * 1024**3
    assert gpu.environment == {"OMP_NUM_THREADS": "4", **SCRATCH_ENV, **K8S["env"]}
    assert gpu.network_mode == "kz"
    assert [(m["Source"], m["Target"]) for m in gpu.mounts] == [("/d", "/data")]
    _, cpu = _in_dag(lambda: job("folds", "folds", ["d"], config=cfg))
    assert cpu.device_requests is None
    assert cpu.environment["OMP_NUM_THREADS"] == "1"
    mine = LaunchConfig.model_validate(cfg.model_dump() | {"env": {"OMP_NUM_THREADS": "2"}})
    _, own = _in_dag(lambda: job("folds", "folds", ["d"], config=mine))
    assert own.environment["OMP_NUM_THREADS"] == "2"  # the config's own setting wins


def _assert_restricted(ctx, *, pod: bool = False) -> None:
    """The restricted Pod Security Standard, field by field."""
    assert ctx.run_as_non_root is True and ctx.run_as_user == JOB_UID != 0
    assert ctx.run_as_group == JOB_UID
    assert ctx.seccomp_profile.type == "RuntimeDefault"
    if not pod:
        assert ctx.allow_privilege_escalation is False and not ctx.privileged
        assert ctx.capabilities.drop == ["ALL"] and not ctx.capabilities.add
        assert ctx.read_only_root_filesystem is True


@pytest.mark.parametrize("command", ["detect train", "folds"])
def test_kubernetes_pods_are_hardened(command):
    cfg = LaunchConfig.model_validate(K8S)
    _, op = _in_dag(lambda: job("t", command, ["x"], config=cfg))
    pod = op.build_pod_request_obj(dry_run=True)
    spec = pod.spec
    assert spec.automount_service_account_token is False  # no Kubernetes API token
    _assert_restricted(spec.security_context, pod=True)
    job_c = spec.containers[0]
    _assert_restricted(job_c.security_context)
    [sidecar] = [c for c in spec.containers if c.name == "airflow-xcom-sidecar"]
    _assert_restricted(sidecar.security_context)

    res = resources_for(command)
    r = job_c.resources
    assert r.requests == {"cpu": f"{res.cpu:g}", "memory": f"{res.memory_gb:g}Gi"}
    assert {k: r.limits[k] for k in ("cpu", "memory")} == r.requests
    assert r.limits.get("nvidia.com/gpu") == ("1" if res.wants_gpu else None)
    assert bool(spec.tolerations) == res.wants_gpu

    # The root filesystem is read-only: every place a job writes is a mounted volume.
    volumes = {v.name: v for v in spec.volumes}
    mounts = {m.mount_path: m.name for m in job_c.volume_mounts}
    assert volumes[mounts[SCRATCH]].empty_dir.size_limit == f"{res.scratch_gb:g}Gi"
    assert volumes[mounts["/dev/shm"]].empty_dir.medium == "Memory"
    env = {e.name: e.value for e in job_c.env}
    for name in ("HOME", "TMPDIR", "KZ_HOME", "XDG_CACHE_HOME", "TORCH_HOME", "MPLCONFIGDIR"):
        assert env[name] == SCRATCH or env[name].startswith(SCRATCH + "/"), name
    summary_dir = env["KZ_SUMMARY_FILE"].rsplit("/", 1)[0]
    assert summary_dir in mounts  # the XCom file is on the sidecar's shared volume


def test_docker_jobs_are_hardened():
    cfg = LaunchConfig.model_validate(K8S | {"launcher": "docker"})
    _, op = _in_dag(lambda: job("detect", "detect train", ["--fold", "0"], config=cfg))
    res = resources_for("detect train")
    assert op.user == f"{JOB_UID}:{JOB_UID}" and not op.privileged and not op.cap_add
    assert op.mem_limit == f"{int(res.memory_gb * 1024)}m"
    hc = op.host_config
    assert hc["cap_drop"] == ["ALL"]
    assert hc["security_opt"] == ["no-new-privileges:true"]
    assert hc["read_only"] is True
    assert hc["nano_cpus"] == int(res.cpu * 1e9)  # a limit, not the provider's CPU share
    assert hc["memswap_limit"] == op.mem_limit
    assert hc["tmpfs"][SCRATCH].startswith(f"size={int(res.scratch_gb * 1024)}m")
    assert {k: op.environment[k] for k in SCRATCH_ENV} == SCRATCH_ENV
    with pytest.raises(ValueError, match="never run as root"):
        LaunchConfig.model_validate(K8S | {"docker": {"user": "0:0"}})
    with pytest.raises(ValueError):
        LaunchConfig.model_validate(K8S | {"uid": 0})


def test_env_and_secrets_from_airflow_connections():
    from airflow.sdk import Connection

    s3 = Connection(conn_id="kz_s3", conn_type="aws", login="AK", password="SK",
                    extra=json.dumps({"endpoint_url": "http://minio:9000",
                                      "region_name": "eu-west-1"}))
    plain, secret = connection_env(s3, "aws")
    assert plain == {"AWS_ENDPOINT_URL": "http://minio:9000",
                     "MLFLOW_S3_ENDPOINT_URL": "http://minio:9000",
                     "AWS_DEFAULT_REGION": "eu-west-1"}
    assert secret == {"AWS_ACCESS_KEY_ID": "AK", "AWS_SECRET_ACCESS_KEY": "SK"}

    ml = Connection(conn_id="kz_mlflow", conn_type="http", host="mlflow", port=5000,
                    login="u", password="p")
    assert connection_env(ml, "mlflow") == (
        {"KZ_MLFLOW_URI": "http://mlflow:5000"},
        {"MLFLOW_TRACKING_USERNAME": "u", "MLFLOW_TRACKING_PASSWORD": "p"},
    )
    pg = Connection(conn_id="kz_lock", conn_type="postgres", host="db", port=5432,
                    login="ml", password="p@ss", schema="mlflow")
    assert connection_env(pg, "postgres") == (
        {}, {"KZ_LOCK_URI": "postgresql+psycopg2://ml:p%40ss@db:5432/mlflow"})
    with pytest.raises(ValueError, match="unknown connection kind"):
        connection_env(pg, "ftp")


def test_each_job_gets_its_roles_connections_and_secrets_in_every_launcher():
    """Least privilege in the launcher: a job gets the shared connections and its own
    role's, never another role's; on Kubernetes, its role's Secret only."""
    roles = {"validate": {"kz_s3_validate": "aws"}, "recognize": {"kz_s3_recognize": "aws"},
             "promote": {"kz_s3_promote": "aws", "kz_lock_promote": "postgres"}}
    secrets = {role: [{"env": "AWS_SECRET_ACCESS_KEY", "secret": f"kz-s3-{role}",
                       "key": "secret-access-key"}] for role in roles}
    base = K8S | {"connections": {"kz_endpoint": "aws"}, "role_connections": roles}
    base["kubernetes"] = K8S["kubernetes"] | {"secrets": [], "role_secrets": secrets}
    want = {"validate batch": {"kz_endpoint": "aws", "kz_s3_validate": "aws"},
            "recognize merge": {"kz_endpoint": "aws", "kz_s3_recognize": "aws"},
            "promote": {"kz_endpoint": "aws", "kz_s3_promote": "aws",
                        "kz_lock_promote": "postgres"},
            "folds": {"kz_endpoint": "aws"}}  # train: no role connection configured here
    for launcher in ("local", "docker", "kubernetes"):
        cfg = LaunchConfig.model_validate(base | {"launcher": launcher})
        for command, conns in want.items():
            _, op = _in_dag(lambda c=command, f=cfg: job("t", c, ["x"], config=f))
            assert op.connections == conns, (launcher, command)
    cfg = LaunchConfig.model_validate(base)
    for command, secret in [("validate batch", "kz-s3-validate"), ("recognize", "kz-s3-recognize"),
                            ("promote", "kz-s3-promote")]:
        _, op = _in_dag(lambda c=command: job("t", c, ["x"], config=cfg))
        refs = {e.name: e.value_from.secret_key_ref.name
                for e in op.build_pod_request_obj(dry_run=True).spec.containers[0].env
                if e.value_from}
        assert refs == {"AWS_SECRET_ACCESS_KEY": secret}, command
    with pytest.raises(ValueError, match="role"):
        LaunchConfig.model_validate(base | {"role_connections": {"admin": {"x": "aws"}}})


def test_the_embedded_default_needs_no_credentials():
    cfg = LaunchConfig.model_validate({"image": "i"})
    assert cfg.launcher == "local"
    assert all(cfg.connections_for(c) == {} and cfg.secrets_for(c) == [] for c in JOB_RESOURCES)
