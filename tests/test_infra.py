"""Deployment files: nothing here can be built (no Docker engine on this machine), so
every image, command, path, setting and launcher configuration they name is checked
against the package, Airflow's CLI and config, and MLflow's CLI."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

from kzjobs.launch import ROLES, LaunchConfig, job
from kzjobs.settings import Settings

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "infra" / "compose" / "compose.yaml"
VALUES = REPO / "infra" / "helm" / "values.yaml"
JOB_DOCKERFILE = REPO / "containers" / "job.Dockerfile"
AIRFLOW_DOCKERFILE = REPO / "containers" / "airflow.Dockerfile"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
JOB_IMAGE = Settings.model_fields["job_image"].default
AIRFLOW_IMAGE = JOB_IMAGE.replace("kzjobs-job", "kzjobs-airflow")
_VAR = re.compile(r"\$\{(\w+)(?::?[-?]([^}]*))?\}")


def substitute(text: str) -> str:
    """Compose's ${VAR:-default} / ${VAR:?message}: defaults in, required ones as <VAR>."""
    return _VAR.sub(lambda m: m.group(2) if m.group(0).find(":-") > 0 else f"<{m.group(1)}>",
                    text)


def instructions(path: Path) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", path.read_text())
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1]) for ln in lines]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def airflow_env(compose: dict) -> dict:
    return compose["x-airflow"]["environment"]


# ---- images ---------------------------------------------------------------------------


def test_job_image():
    ins = instructions(JOB_DOCKERFILE)
    args = dict(a.split("=", 1) for k, a in ins if k == "ARG" and "=" in a)
    base = args["CUDA_IMAGE"]
    assert base.startswith("nvidia/cuda:") and "runtime" in base
    import torch

    if torch.version.cuda:  # the wheel's CUDA major.minor is the runtime's
        assert f":{torch.version.cuda}." in base
    assert ("ENTRYPOINT", '["kzjobs"]') in ins
    assert PYPROJECT["project"]["scripts"]["kzjobs"] == "kzjobs.cli:app"
    users = [a for k, a in ins if k == "USER"]
    assert users and users[-1] not in ("0", "root")
    run = " ".join(a for k, a in ins if k == "RUN")
    assert 'pip install ".[jobs]"' in run and "jobs" in PYPROJECT["project"][
        "optional-dependencies"]
    assert "useradd" in run and "--uid 10001" in run and users[-1] == "10001"
    for src in (a.split()[:-1] for k, a in ins if k == "COPY"):
        for path in src:
            assert (REPO / path).exists(), path
    assert f"-t {JOB_IMAGE}" in JOB_DOCKERFILE.read_text()


def test_every_font_of_the_synthetic_books_is_installed_by_make_and_the_job_image():
    from kzjobs.synth.fonts import FONT_SPECS

    makefile = re.sub(r"\\\n", " ", (REPO / "Makefile").read_text())
    make_packages = set(re.search(r"^FONT_PACKAGES :=(.*)$", makefile, re.M).group(1).split())
    image_packages = set(" ".join(a for k, a in instructions(JOB_DOCKERFILE)
                                  if k == "RUN").split())
    needed = {spec.package for spec in FONT_SPECS.values()}
    assert needed <= make_packages, needed - make_packages
    assert needed <= image_packages, needed - image_packages
    assert {p for p in make_packages if p.startswith("fonts-")} == needed  # none left over


def test_airflow_image():
    ins = instructions(AIRFLOW_DOCKERFILE)
    args = dict(a.split("=", 1) for k, a in ins if k == "ARG" and "=" in a)
    assert args["AIRFLOW_IMAGE"].startswith(f"apache/airflow:{version('apache-airflow')}-")
    run = " ".join(a for k, a in ins if k == "RUN")
    wanted = {re.split(r"[<>=\[; ]", r)[0] for r in PYPROJECT["project"][
        "optional-dependencies"]["airflow"]}
    named = {r for r in re.findall(r'"([a-z][\w-]*)[\[<>=]', run) if r != "apache-airflow"}
    assert named == wanted - {"apache-airflow"}  # the package's airflow extra, the same pins
    for requirement in PYPROJECT["project"]["optional-dependencies"]["airflow"]:
        if requirement.startswith("apache-airflow>"):
            continue  # the image pins the base image's own version
        assert f'"{requirement}"' in run, requirement
    copies = {a.split()[-2]: a.split()[-1] for k, a in ins if k == "COPY"}
    assert copies["dags"] == "/opt/airflow/dags"
    assert copies["kzjobs"].endswith("/kzjobs")
    for src in copies:
        assert (REPO / src).exists(), src
    assert f"-t {AIRFLOW_IMAGE}" in AIRFLOW_DOCKERFILE.read_text()


def test_dockerignore_lets_the_copied_paths_through():
    for dockerfile in (JOB_DOCKERFILE, AIRFLOW_DOCKERFILE):
        allowed = {ln[1:].rstrip("/") for ln in Path(f"{dockerfile}.dockerignore").read_text()
                   .splitlines() if ln.startswith("!")}
        copied = {p.rstrip("/") for k, a in instructions(dockerfile) if k == "COPY"
                  for p in a.split()[:-1] if not p.startswith("--")}
        assert copied <= allowed, copied - allowed


# ---- compose ----------------------------------------------------------------------------


def test_compose_services_and_commands(compose):
    from airflow.cli.cli_parser import get_parser
    from mlflow.cli import server

    services = compose["services"]
    assert {"postgres", "minio", "mlflow", "airflow-apiserver", "airflow-scheduler",
            "airflow-dag-processor", "airflow-triggerer"} <= set(services)
    parser = get_parser()
    for name, svc in services.items():
        if name.startswith("airflow-"):
            assert substitute(svc["image"]) == AIRFLOW_IMAGE
            parser.parse_args(svc["command"])  # a real Airflow 3 command (exits if not)
    mlflow = services["mlflow"]
    assert substitute(mlflow["image"]) == JOB_IMAGE and mlflow["entrypoint"] == ["mlflow"]
    assert mlflow["command"][0] == "server"
    options = {o for p in server.params for o in p.opts}
    assert {a for a in mlflow["command"] if a.startswith("--")} <= options
    assert (COMPOSE.parent / "initdb" / "01-databases.sh").stat().st_mode & 0o111


def test_compose_airflow_settings_exist(compose):
    from airflow.configuration import retrieve_configuration_description

    described = retrieve_configuration_description()
    env = airflow_env(compose)
    for key in env:
        if key.startswith("AIRFLOW__"):
            section, option = key.removeprefix("AIRFLOW__").lower().split("__")
            assert option in described[section]["options"], key
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == "/opt/airflow/dags"
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"


def test_compose_launcher_config_is_valid(compose):
    env = airflow_env(compose)
    cfg = LaunchConfig.model_validate(
        json.loads(substitute(env["AIRFLOW_VAR_KZ_LAUNCH"])) | {"launcher": env["KZ_LAUNCHER"]}
    )
    assert cfg.launcher == "docker" and cfg.image == JOB_IMAGE
    assert cfg.docker.network_mode == f"{compose['name']}_default"
    assert cfg.env["KZ_MLFLOW_URI"] == "http://mlflow:5000"
    # each connection the launcher reads is defined, and every role has its own S3 user
    role_conns = [c for conns in cfg.role_connections.values() for c in conns]
    for conn_id in [*cfg.connections, *role_conns]:
        assert f"AIRFLOW_CONN_{conn_id.upper()}" in env
    assert set(cfg.role_connections) == set(ROLES)
    assert not any(kind == "aws" for kind in cfg.connections.values())  # no shared keys
    # MinIO's root keys reach neither Airflow (hence no job) nor the MLflow server.
    assert "MINIO_ROOT" not in json.dumps(env)
    assert "MINIO_ROOT" not in json.dumps(compose["services"]["mlflow"])
    socket = "/var/run/docker.sock:/var/run/docker.sock"
    assert socket in compose["services"]["airflow-scheduler"]["volumes"]


def test_no_credentials_in_deployment_files():
    # a key (YAML, env file or Dockerfile ENV) that names a secret, and its value
    secretish = re.compile(
        r"^\s*-?\s*(?:ENV\s+)?\w*(PASSWORD|SECRET|FERNET|ACCESS_KEY|ROOT_USER)\w*\s*[:=]\s*(.+)$"
    )
    userinfo = re.compile(r"://[^/\s:@]+:([^@\s]+)@")
    for path in [*REPO.joinpath("infra").rglob("*"), *REPO.joinpath("containers").rglob("*")]:
        if not path.is_file() or path.name == "README.md":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if line.lstrip().startswith("#"):
                continue
            m = secretish.search(line)
            if m and path.name != "env.example":
                value = m.group(2).strip().strip('"')
                assert value.startswith(("${", "$$", "<")) or value in ("", "admin:admin"), (
                    f"{path}:{n}")
            for pw in userinfo.findall(line):
                assert pw.startswith("${"), f"{path}:{n}: a password in a URI"
    example = REPO / "infra" / "compose" / "env.example"
    for line in example.read_text().splitlines():
        if line and not line.startswith("#") and "PASSWORD" in line:
            assert line.endswith("="), line  # the example carries no value


@pytest.mark.skipif(
    shutil.which("docker") is None
    or subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0,
    reason="the docker compose plugin is not installed here",
)
def test_docker_compose_config(tmp_path):
    env = tmp_path / ".env"
    names = {m.group(1) for m in _VAR.finditer(COMPOSE.read_text())}
    env.write_text("".join(f"{n}=x\n" for n in names))
    subprocess.run(["docker", "compose", "-f", str(COMPOSE), "--env-file", str(env), "config",
                    "-q"], check=True, env={**os.environ})


# ---- helm -------------------------------------------------------------------------------


def test_helm_values_for_the_kubernetes_executor_and_gpu_pool():
    values = yaml.safe_load(VALUES.read_text())
    assert values["executor"] == "KubernetesExecutor"
    assert values["airflowVersion"] == version("apache-airflow")
    image = values["images"]["airflow"]
    assert f"{image['repository']}:{image['tag']}" == AIRFLOW_IMAGE
    env = {e["name"]: e["value"] for e in values["env"]}
    assert env["KZ_LAUNCHER"] == "kubernetes"
    cfg = LaunchConfig.model_validate(json.loads(env["AIRFLOW_VAR_KZ_LAUNCH"])
                                      | {"launcher": "kubernetes"})
    assert cfg.image == env["KZ_JOB_IMAGE"] == JOB_IMAGE
    assert values["nodeSelector"] == cfg.kubernetes.cpu_node_selector  # Airflow off the GPUs
    assert cfg.kubernetes.gpu_node_selector != cfg.kubernetes.cpu_node_selector
    # One Secret per role, in that role's pods only; the lock's URI for promote alone.
    assert not cfg.kubernetes.secrets
    for role in ROLES:
        refs = cfg.kubernetes.role_secrets[role]
        assert {s.env for s in refs} >= {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
        assert {s.secret for s in refs if s.env.startswith("AWS_")} == {f"kz-s3-{role}"}
        assert ("KZ_LOCK_URI" in {s.env for s in refs}) == (role == "promote")

    from airflow.sdk import DAG

    with DAG("t", schedule=None):
        pod = job("t", "classify train", ["--fold", "0"], config=cfg).build_pod_request_obj(
            dry_run=True)
    assert pod.spec.containers[0].resources.limits["nvidia.com/gpu"] == "1"
    assert pod.spec.node_selector == {"kzjobs.io/pool": "gpu"}
    assert pod.metadata.namespace == "kzjobs" and pod.spec.service_account_name == "kzjobs-job"


def test_readme_names_what_exists():
    text = (REPO / "infra" / "README.md").read_text()
    for path in re.findall(r"`((?:containers|infra)/[\w./-]+)`", text):
        assert (REPO / path).exists(), path
    for path in ("containers/job.Dockerfile", "containers/airflow.Dockerfile",
                 "infra/compose/compose.yaml", "infra/helm/values.yaml"):
        assert path in text or Path(path).name in text
