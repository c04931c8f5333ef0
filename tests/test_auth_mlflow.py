"""MLflow with its basic-auth app, as the compose stack runs it: a real ``mlflow server
--app-name basic-auth`` on 127.0.0.1 with the stack's auth config (its database moved to a
temporary SQLite file), the admin's password from the environment. Unauthenticated
requests are refused; the jobs log in as their own user, with the credentials the
launcher's ``mlflow`` connection gives them, and register and load a version."""

from __future__ import annotations

import base64
import configparser
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from kzjobs.core.settings import get_settings
from tests.conftest import free_port, wait_for_http

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "infra" / "compose" / "compose.yaml"
AUTH_INI = COMPOSE.with_name("mlflow-auth.ini")
ADMIN = "admin"
JOB_USER = "kzjobs"


class Server:
    def __init__(self, url: str, admin_password: str) -> None:
        self.url = url
        self.admin_password = admin_password


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, _mlflow_db_template: Path) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("mlflow-auth")
    config = configparser.ConfigParser()
    config.read(AUTH_INI)
    assert "admin_password" not in config["mlflow"]  # the password is a secret, not config
    config["mlflow"]["database_uri"] = f"sqlite:///{tmp / 'auth.db'}"
    # A PBKDF2 check per request costs a registration minutes on this shared CPU; the
    # cache keeps successful logins only, so every refusal below is still checked.
    config["mlflow"]["auth_cache_ttl_seconds"] = "600"
    with open(tmp / "auth.ini", "w") as f:
        config.write(f)
    shutil.copyfile(_mlflow_db_template, tmp / "mlflow.db")  # migrated already: fast start
    password = secrets.token_urlsafe(16)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
    env |= {"MLFLOW_AUTH_CONFIG_PATH": str(tmp / "auth.ini"),
            "MLFLOW_AUTH_ADMIN_PASSWORD": password,
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secrets.token_hex(16),
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    # The compose service's command, its stores and address moved here.
    command = yaml.safe_load(COMPOSE.read_text())["services"]["mlflow"]["command"]
    assert command[0] == "server" and len(command) % 2 == 1
    options = dict(zip(command[1::2], command[2::2], strict=True))
    options |= {"--backend-store-uri": f"sqlite:///{tmp / 'mlflow.db'}",
                "--artifacts-destination": (tmp / "artifacts").as_uri(),
                "--host": "127.0.0.1", "--port": str(port), "--workers": "1",
                "--allowed-hosts": f"127.0.0.1:{port}"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", *(x for kv in options.items() for x in kv)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True,  # its own process group: stopped whole below
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/health", proc, "mlflow server", log=proc.stderr.read)
        yield Server(url, password)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)


def _get(url: str, user: str | None = None, password: str | None = None) -> int:
    request = urllib.request.Request(url)
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_unauthenticated_requests_are_refused(server):
    api = f"{server.url}/api/2.0/mlflow/experiments/search?max_results=1"
    assert _get(api) == 401
    assert _get(api, ADMIN, "wrong") == 401
    assert _get(api, ADMIN, "password1234") == 401  # MLflow's old default never works
    assert _get(api, ADMIN, server.admin_password) == 200
    models = f"{server.url}/api/2.0/mlflow/registered-models/search"
    assert (_get(models), _get(models, ADMIN, server.admin_password)) == (401, 200)
    assert _get(f"{server.url}/health") == 200  # the healthcheck needs no login


def _job_env(server: Server, password: str) -> dict[str, str]:
    """The environment the launcher gives a job from the compose stack's ``kz_mlflow``
    connection (its ``.env`` values filled in, the server here on 127.0.0.1)."""
    import re

    from airflow.sdk import Connection

    from kzjobs.orchestrate.connections import connection_env

    compose = yaml.safe_load(COMPOSE.read_text())
    uri = compose["services"]["airflow-scheduler"]["environment"]["AIRFLOW_CONN_KZ_MLFLOW"]
    dotenv = {"MLFLOW_JOB_USER": JOB_USER, "MLFLOW_JOB_PASSWORD": password}
    uri = re.sub(r"\$\{(\w+)[^}]*\}", lambda m: dotenv[m.group(1)], uri)
    uri = uri.replace("@mlflow:5000", "@" + server.url.removeprefix("http://"))
    conn = Connection.from_uri(uri, conn_id="kz_mlflow")
    plain, secret = connection_env(conn, "mlflow")
    assert plain == {"KZ_MLFLOW_URI": server.url}
    assert secret == {"MLFLOW_TRACKING_USERNAME": JOB_USER, "MLFLOW_TRACKING_PASSWORD": password}
    return plain | secret


def test_a_job_registers_and_loads_a_version_as_its_own_user(server, tmp_path, monkeypatch,
                                                             make_bundle, make_heldout):
    from kzjobs.core.store import open_store
    from kzjobs.data.dataset import Dataset
    from kzjobs.orchestrate.mlflow_auth import ensure_user
    from kzjobs.release import registry

    # The operator (or compose's mlflow-init), as the admin, makes the jobs' user.
    password = secrets.token_urlsafe(16)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", ADMIN)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", server.admin_password)
    assert ensure_user(server.url, JOB_USER, "first-" + password) == "created"
    assert ensure_user(server.url, JOB_USER, password) == "updated"  # idempotent
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME")
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")

    store = open_store(tmp_path / "store")
    make_bundle(store, "runs/a", tag="a")
    make_heldout(store, "heldout")
    hv = registry.dataset_version(Dataset.open("heldout", store))
    store.write_json("runs/a/evaluation.json", {"dataset": "heldout", "dataset_version": hv,
                                                "f1": 0.5, "by_book": {}})
    register = [sys.executable, "-m", "kzjobs", "register", "--bundle", "runs/a",
                "--evaluation", "runs/a/evaluation.json", "--dataset", "heldout",
                "--store", store.uri, "--profile", "tiny"]
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("MLFLOW_TRACKING_", "KZ_MLFLOW"))}
    base |= {"KZ_HOME": str(tmp_path / "home")}

    # Without the connection's credentials the job is refused...
    anonymous = subprocess.run(register, env=base | {"KZ_MLFLOW_URI": server.url},
                               capture_output=True, text=True, timeout=300)
    assert anonymous.returncode != 0
    assert "401" in anonymous.stderr or "Unauthorized" in anonymous.stderr, anonymous.stderr[-2000:]
    # ...with them (secret env, as the launcher passes them), it registers.
    job = subprocess.run(register, env=base | _job_env(server, password), capture_output=True,
                         text=True, timeout=300)
    assert job.returncode == 0, job.stderr[-3000:]
    summary = json.loads(job.stdout[job.stdout.index("{"):])  # the job's JSON summary
    assert (summary["version"], summary["reused"]) == (1, False)

    # The job's user loads it back (kzjobs.release.registry through the server, artifacts proxied).
    monkeypatch.setenv("KZ_MLFLOW_URI", server.url)
    for key, value in _job_env(server, password).items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    version = registry.get_version("candidate")
    assert (int(version.version), version.tags["heldout"]) == (1, "heldout")
    model = registry.load_model("models:/kz-recognizer@candidate")
    pyfunc = model.metadata.flavors["python_function"]
    assert pyfunc["loader_module"] == "kzjobs.release.registry_model"
    # ...and the registry answers nobody else.
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong")
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException, match=r"401|Unauthorized|credentials"):
        registry.get_version("candidate")


def test_the_compose_stack_runs_mlflow_with_auth():
    compose = yaml.safe_load(COMPOSE.read_text())
    mlflow = compose["services"]["mlflow"]
    command = mlflow["command"]
    assert command[command.index("--app-name") + 1] == "basic-auth"
    env = mlflow["environment"]
    assert env["MLFLOW_AUTH_CONFIG_PATH"] in " ".join(mlflow["volumes"])
    for secret in ("MLFLOW_AUTH_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY", "PGPASSWORD"):
        assert env[secret].startswith("${") and ":?" in env[secret], secret  # from .env
