"""Deployment files: nothing here can be built (no Docker engine on this machine), so
every image, command, path, setting and launcher configuration they name is checked
against the package, Airflow's CLI and config, and MLflow's CLI."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

from kzjobs.core.settings import Settings
from kzjobs.orchestrate.launch import ROLES, LaunchConfig, job

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "infra" / "compose" / "compose.yaml"
VALUES = REPO / "infra" / "helm" / "values.yaml"
JOB_DOCKERFILE = REPO / "containers" / "job.Dockerfile"
AIRFLOW_DOCKERFILE = REPO / "containers" / "airflow.Dockerfile"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
JOB_IMAGE = Settings.model_fields["job_image"].default
AIRFLOW_IMAGE = JOB_IMAGE.replace("kzjobs-job", "kzjobs-airflow")
_VAR = re.compile(r"\$\{(\w+)(?::?[-?]([^}]*))?\}")
LOCKS = REPO / "locks"
DOCKER_GROUP = "DOCKER_GID"
# name:tag@sha256:<64 hex>: a digest, and the tag it was published as
PINNED = re.compile(r"^[a-z0-9./_-]+:[\w.-]+@sha256:[0-9a-f]{64}$")


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
    # every dependency from the hashed jobs lock, then kzjobs alone
    assert "pip install --require-hashes -r locks/jobs.txt" in run
    assert "pip install --no-deps --no-build-isolation ." in run
    assert "useradd" in run and "--uid 10001" in run and users[-1] == "10001"
    from kzjobs.orchestrate.launch import JOB_UID  # the launcher runs jobs as this uid:gid

    assert f"--uid {JOB_UID} --gid {JOB_UID}" in run and f"--gid {JOB_UID} kz" in run
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
    airflow = version("apache-airflow")
    assert args["AIRFLOW_IMAGE"] == f"apache/airflow:slim-{airflow}-python3.11"
    run = " ".join(a for k, a in ins if k == "RUN")
    # The providers come from the hashed Airflow lock, which pins the base image's Airflow.
    assert args["KZ_LOCK"] == "airflow"
    assert "pip install --no-cache-dir --require-hashes -r /opt/kzjobs-src/locks/${KZ_LOCK}.txt" \
        in run
    assert "--no-deps --no-build-isolation /opt/kzjobs-src" in run
    locked = lock_pins(LOCKS / "airflow.txt")
    assert locked["apache-airflow"] == {airflow}
    copies = {a.split()[-2]: a.split()[-1] for k, a in ins if k == "COPY"}
    assert copies["dags"] == "/opt/airflow/dags"
    assert copies["kzjobs"].endswith("/kzjobs")
    for src in copies:
        assert (REPO / src.replace("${KZ_LOCK}", args["KZ_LOCK"])).exists(), src
    assert f"-t {AIRFLOW_IMAGE}" in AIRFLOW_DOCKERFILE.read_text()


def test_dockerignore_lets_the_copied_paths_through():
    for dockerfile in (JOB_DOCKERFILE, AIRFLOW_DOCKERFILE):
        allowed = {ln[1:].rstrip("/") for ln in Path(f"{dockerfile}.dockerignore").read_text()
                   .splitlines() if ln.startswith("!")}
        copied = {p.rstrip("/") for k, a in instructions(dockerfile) if k == "COPY"
                  for p in a.split()[:-1] if not p.startswith("--")}
        assert {p.split("/")[0] for p in copied} <= allowed, copied - allowed


# ---- compose ----------------------------------------------------------------------------


def airflow_commands(command: list[str]) -> list[list[str]]:
    """The Airflow CLI commands of a service: its command, or each ``airflow ...`` step of
    a ``bash -c`` script (as the shell sees it: ``$$`` is compose's ``$``)."""
    if command[:2] != ["bash", "-c"]:
        return [command]
    steps = [shlex.split(step) for step in command[2].replace("$$", "$").split("&&")]
    assert all(step[0] == "airflow" for step in steps), steps
    return [step[1:] for step in steps]


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
            for command in airflow_commands(svc["command"]):
                parser.parse_args(command)  # a real Airflow 3 command (exits if not)
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
    assert cfg.docker.docker_url == "tcp://docker-proxy:2375"  # never the socket itself


def test_compose_only_the_socket_proxy_holds_the_docker_socket(compose):
    services = compose["services"]
    holders = {name for name, svc in services.items()
               if any("docker.sock" in str(v) for v in svc.get("volumes", []))}
    assert holders == {"docker-proxy"}
    assert not any(DOCKER_GROUP in str(svc.get("group_add", [])) for name, svc in
                   services.items() if name != "docker-proxy")
    proxy = services["docker-proxy"]
    assert "ports" not in proxy  # never published
    assert proxy["networks"] == ["docker-api"]
    assert compose["networks"]["docker-api"] == {"internal": True}
    members = {name for name, svc in services.items()
               if "docker-api" in (svc.get("networks") or [])}
    assert members == {"docker-proxy", "airflow-scheduler"}  # the LocalExecutor's tasks
    assert "./docker-proxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro" in proxy["volumes"]
    assert proxy["read_only"] is True and proxy["cap_drop"] == ["ALL"]
    assert "airflow-init" in services["airflow-scheduler"]["depends_on"]


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
                assert value.startswith(("${", "$$", "<")) or value == "", (
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


def test_helm_job_pods_and_airflow_pods_are_hardened():
    from airflow.sdk import DAG

    values = yaml.safe_load(VALUES.read_text())
    env = {e["name"]: e["value"] for e in values["env"]}
    cfg = LaunchConfig.model_validate(json.loads(env["AIRFLOW_VAR_KZ_LAUNCH"])
                                      | {"launcher": "kubernetes"})
    with DAG("t", schedule=None):
        pod = job("t", "recognize", ["c"], config=cfg).build_pod_request_obj(dry_run=True)
    c = pod.spec.containers[0]
    assert pod.spec.automount_service_account_token is False
    assert pod.spec.security_context.run_as_non_root and c.security_context.run_as_non_root
    assert c.security_context.read_only_root_filesystem
    assert c.security_context.capabilities.drop == ["ALL"]
    assert c.security_context.allow_privilege_escalation is False
    assert c.security_context.seccomp_profile.type == "RuntimeDefault"
    assert {"cpu", "memory", "nvidia.com/gpu"} <= set(c.resources.limits)
    # Airflow's own pods (the chart's securityContexts): the same, but for the root
    # filesystem, which Airflow writes to (logs, airflow.cfg).
    ctx = values["securityContexts"]
    assert ctx["pod"]["runAsNonRoot"] is True and ctx["pod"]["runAsUser"] == values["uid"]
    assert ctx["pod"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert ctx["containers"]["allowPrivilegeEscalation"] is False
    assert ctx["containers"]["capabilities"] == {"drop": ["ALL"]}


# ---- supply chain -----------------------------------------------------------------------


def lock_entries(path: Path) -> list[tuple[str, list[str]]]:
    """(requirement, its hashes) for each entry of a hashed requirements file."""
    text = re.sub(r"\\\n", " ", path.read_text())
    entries = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement, *hashes = line.split(" --hash=")
        entries.append((requirement.strip(), [h.strip() for h in hashes]))
    return entries


def lock_pins(path: Path) -> dict[str, set[str]]:
    """Canonical name -> the versions a lock pins (more than one only under markers)."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins: dict[str, set[str]] = {}
    for requirement, _ in lock_entries(path):
        req = Requirement(requirement)
        pins.setdefault(canonicalize_name(req.name), set()).add(
            str(req.specifier).removeprefix("=="))
    return pins


@pytest.mark.parametrize("lock", ["all", "jobs", "airflow", "pip"])
def test_every_locked_requirement_is_pinned_with_hashes(lock):
    from packaging.requirements import Requirement

    entries = lock_entries(LOCKS / f"{lock}.txt")
    assert entries
    for requirement, hashes in entries:
        req = Requirement(requirement)  # a name, no URL or path
        assert req.url is None, requirement
        [spec] = req.specifier  # exactly one
        assert spec.operator == "==" and "*" not in spec.version, requirement
        assert hashes, f"{requirement}: no --hash"
        for h in hashes:
            assert re.fullmatch(r"sha256:[0-9a-f]{64}", h), (requirement, h)


def test_the_locks_hold_what_pyproject_asks_for():
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = PYPROJECT["project"]
    groups = {"all": [*project["dependencies"],
                      *(r for extra in project["optional-dependencies"].values() for r in extra)],
              "jobs": [*project["dependencies"], *project["optional-dependencies"]["jobs"]],
              "airflow": [*project["dependencies"], *project["optional-dependencies"]["airflow"]]}
    everything = lock_pins(LOCKS / "all.txt")
    for lock, requirements in groups.items():
        pins = lock_pins(LOCKS / f"{lock}.txt")
        for requirement in requirements:
            req = Requirement(requirement)
            name = canonicalize_name(req.name)
            assert name in pins, f"{lock}.txt lacks {name}: run `make lock`"
            assert any(req.specifier.contains(v, prereleases=True) for v in pins[name]), (
                f"{lock}.txt pins {name} {pins[name]}, pyproject asks {req.specifier}: "
                "run `make lock`")
        for name, versions in pins.items():  # the image locks agree with make's
            assert versions <= everything[name], (lock, name)
    torch = version("torch").split("+")[0]
    assert everything["torch"] == {torch}  # the same torch as this environment


def test_make_and_the_images_install_only_from_the_locks():
    makefile = re.sub(r"\\\n", " ", (REPO / "Makefile").read_text())
    installs = [ln for ln in makefile.splitlines() if "pip install" in ln]
    assert installs
    for line in installs:
        assert ("--require-hashes -r $(LOCKS)/" in line
                or ("--no-deps" in line and "--no-build-isolation" in line)), line
    assert any("$(LOCKS)/all.txt" in ln for ln in installs)
    assert re.search(r"^lock:", makefile, re.M) and "--generate-hashes" in makefile
    for dockerfile in (JOB_DOCKERFILE, AIRFLOW_DOCKERFILE):
        for run in (a for k, a in instructions(dockerfile) if k == "RUN"):
            for cmd in re.split(r"&&", run):
                if "pip install" in cmd:
                    assert "--require-hashes -r" in cmd or (
                        "--no-deps" in cmd and "--no-build-isolation" in cmd), cmd


def test_base_images_are_pinned_by_digest(compose):
    for name, svc in compose["services"].items():
        image = svc["image"]
        if image.startswith("${KZ_"):  # this project's images: the operator pins them
            continue
        assert PINNED.match(image), f"{name}: {image} is not pinned by digest"
    assert "KZ_JOB_IMAGE" in COMPOSE.read_text() and "name@sha256" in COMPOSE.read_text()
    for dockerfile in (JOB_DOCKERFILE, AIRFLOW_DOCKERFILE):
        ins = instructions(dockerfile)
        args = dict(a.split("=", 1) if "=" in a else (a, None) for k, a in ins if k == "ARG")
        for ref in (a.split()[0] for k, a in ins if k == "FROM"):
            if "@${" in ref:
                # A digest build argument: pinned by its default, or with no default
                # the build fails rather than float (apache/airflow: its TODO).
                image_arg, digest_arg = re.fullmatch(r"\$\{(\w+)\}@\$\{(\w+)\}", ref).groups()
                digest = args[digest_arg]
                assert PINNED.match(f"{args[image_arg]}@{digest}") if digest else (
                    "TODO" in dockerfile.read_text())
            else:
                ref = args[re.fullmatch(r"\$\{(\w+)\}", ref).group(1)] if ref.startswith(
                    "${") else ref
                assert PINNED.match(ref), f"{dockerfile.name}: {ref} is not pinned by digest"
