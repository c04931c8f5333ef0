"""Airflow with the FAB auth manager, as the compose stack runs it: the compose init
command (migrate, then the admin from a secret env var) on a throwaway metadata DB, then a
real ``airflow api-server`` on 127.0.0.1. The public API refuses requests without a token
and a token for a wrong password, and answers one from ``/auth/token`` with the secret."""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import free_port, wait_for_http

REPO = Path(__file__).resolve().parents[1]
COMPOSE = REPO / "infra" / "compose" / "compose.yaml"
VALUES = REPO / "infra" / "helm" / "values.yaml"
FAB = "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager"


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def _init_script() -> str:
    """airflow-init's shell script, as the container's shell sees it (``$$`` is compose's
    escape for ``$``)."""
    command = _compose()["services"]["airflow-init"]["command"]
    assert command[:2] == ["bash", "-c"]
    return command[2].replace("$$", "$")


class Api:
    def __init__(self, url: str, password: str) -> None:
        self.url = url
        self.password = password

    def request(self, method: str, path: str, body: Any = None,
                token: str | None = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.url}{path}", data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if token:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=60) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    from kzjobs.demo import airflow_env

    home = tmp_path_factory.mktemp("airflow-fab")
    compose_env = _compose()["services"]["airflow-init"]["environment"]
    assert compose_env["AIRFLOW__CORE__AUTH_MANAGER"] == FAB
    # A leading "-" (one token in 64) once read as an option: `--password=` must bind it.
    password = f"-{secrets.token_urlsafe(16)}"
    port = free_port()
    env = airflow_env(home, **{  # a throwaway SQLite metadata DB under home
        "AIRFLOW__CORE__AUTH_MANAGER": compose_env["AIRFLOW__CORE__AUTH_MANAGER"],
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        "AIRFLOW_ADMIN_USER": "admin",
        "AIRFLOW_ADMIN_PASSWORD": password,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    })
    init = subprocess.run(["bash", "-c", _init_script()], env=env, capture_output=True,
                          text=True, timeout=900)
    assert init.returncode == 0, init.stdout[-2000:] + init.stderr[-4000:]
    # Again, as on every `compose up`: the admin exists, and its password follows the secret.
    again = subprocess.run(["bash", "-c", _init_script()], env=env, capture_output=True,
                           text=True, timeout=900)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-4000:]

    log = open(home / "api-server.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("airflow")), "api-server", "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/api/v2/monitor/health", proc, "airflow api-server",
                      seconds=300, log=(home / "api-server.log").read_text)
        yield Api(url, password)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        log.close()


def test_the_api_refuses_requests_without_a_valid_login(api):
    status, _ = api.request("GET", "/api/v2/dags")
    assert status == 401
    status, _ = api.request("GET", "/api/v2/dags", None, "not-a-jwt")
    assert status in (401, 403)
    for user, password in [("admin", "admin"), ("admin", "wrong"), ("nobody", api.password)]:
        status, _ = api.request("POST", "/auth/token", {"username": user, "password": password})
        assert status == 401, (user, password)


def test_the_admin_from_the_secret_gets_a_token_that_works(api):
    status, body = api.request("POST", "/auth/token",
                               {"username": "admin", "password": api.password})
    assert status == 201, body
    token = body["access_token"]
    status, body = api.request("GET", "/api/v2/dags", token=token)
    assert status == 200, body
    assert "dags" in body
    status, body = api.request("GET", "/auth/fab/v1/users/admin", token=token)
    assert status == 200 and "Admin" in [r["name"] for r in body["roles"]], body


def test_compose_and_helm_make_the_admin_from_a_secret():
    compose = _compose()
    services = compose["services"]
    shared = services["airflow-apiserver"]["environment"]
    assert shared["AIRFLOW__CORE__AUTH_MANAGER"] == FAB
    assert not any("SIMPLE_AUTH_MANAGER" in key for key in shared)
    # Only the init service sees the admin's password, and it comes from .env.
    assert services["airflow-init"]["environment"]["AIRFLOW_ADMIN_PASSWORD"].startswith("${")
    assert "AIRFLOW_ADMIN_PASSWORD" not in shared
    assert '"$AIRFLOW_ADMIN_PASSWORD"' in _init_script()

    values = yaml.safe_load(VALUES.read_text())
    env = {e["name"]: e for e in values["env"]}
    assert env["AIRFLOW__CORE__AUTH_MANAGER"]["value"] == FAB
    job = values["createUserJob"]
    assert job["command"] == ["bash", "-c"] and job["args"] == [_init_script().split(
        "airflow db migrate && ", 1)[1]]  # the chart migrates in its own job
    job_env = {e["name"]: e for e in job["env"]}
    ref = job_env["AIRFLOW_ADMIN_PASSWORD"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] and ref["key"]
    assert "password" not in values.get("webserver", {}).get("defaultUser", {})
