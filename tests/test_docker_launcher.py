"""The docker launcher on the wire. No Docker engine runs here, so a small recording
stand-in for the Docker Engine API answers on 127.0.0.1; everything in front of it is
real: Airflow's DockerOperator (as KzDockerOperator), docker-py, and the compose stack's
socket proxy (the HAProxy binary with infra/compose/docker-proxy.cfg).

What is checked is what would reach the engine: the hardened host config of a job's
container, and that the proxy passes every call a job makes and refuses the rest."""

from __future__ import annotations

import json
import re
import shutil
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from kzjobs.orchestrate.launch import JOB_UID, SCRATCH, LaunchConfig, job, resources_for

REPO = Path(__file__).resolve().parents[1]
PROXY_CFG = REPO / "infra" / "compose" / "docker-proxy.cfg"
CONTAINER_ID = "c0ffee"
SUMMARY = {"job": "detect train", "ok": True}
_PREFIX = re.compile(r"^/v[0-9.]+")


class FakeEngine(BaseHTTPRequestHandler):
    """The Docker Engine API calls one job container needs, each recorded."""

    protocol_version = "HTTP/1.1"
    calls: list[tuple[str, str]]
    created: list[dict]
    started: threading.Event

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def _path(self) -> str:
        return _PREFIX.sub("", self.path.split("?", 1)[0])

    def _reply(self, code: int, body: object = None, ctype: str = "application/json") -> None:
        data = b"" if body is None else (
            body.encode() if isinstance(body, str) else json.dumps(body).encode())
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _record(self) -> str:
        path = self._path()
        self.calls.append((self.command, path))
        length = int(self.headers.get("Content-Length") or 0)
        self._body = self.rfile.read(length) if length else b""
        return path

    def do_HEAD(self) -> None:
        self._record()
        self._reply(200, "OK", "text/plain")

    def do_GET(self) -> None:
        path = self._record()
        if path == "/_ping":
            self._reply(200, "OK", "text/plain")
        elif path == "/version":
            self._reply(200, {"ApiVersion": "1.45", "MinAPIVersion": "1.24", "Version": "27"})
        elif path == "/images/json":
            self._reply(200, [{"Id": "sha256:" + "1" * 64, "RepoTags": ["job:1"]}])
        elif path == f"/containers/{CONTAINER_ID}/json":
            self._reply(200, {"Id": CONTAINER_ID, "Config": {"Tty": False}})
        else:
            self._reply(200, [])

    def do_POST(self) -> None:
        path = self._record()
        if path == "/containers/create":
            self.created.append(json.loads(self._body))
            self._reply(201, {"Id": CONTAINER_ID, "Warnings": []})
        elif path == f"/containers/{CONTAINER_ID}/attach":
            # The hijacked log stream: one stdout frame holding the job's summary, then EOF.
            self.send_response(101)
            self.send_header("Content-Type", "application/vnd.docker.raw-stream")
            self.send_header("Connection", "Upgrade")
            self.send_header("Upgrade", "tcp")
            self.end_headers()
            self.wfile.flush()
            # Like the engine, output comes once the container starts: bytes sent with
            # the headers would sit in the client's HTTP buffer, not on the raw socket.
            self.started.wait(timeout=30)
            out = (json.dumps(SUMMARY, indent=2) + "\n").encode()
            self.wfile.write(struct.pack(">BxxxL", 1, len(out)) + out)
            self.wfile.flush()
            self.close_connection = True
        elif path == f"/containers/{CONTAINER_ID}/wait":
            self._reply(200, {"StatusCode": 0})
        elif path.endswith(("/start", "/stop")):
            self.started.set()
            self._reply(204)
        else:  # exec, build, ...: the stand-in accepts anything; the proxy decides
            self._reply(201, {"Id": "x"})

    def do_PUT(self) -> None:
        self._record()
        self._reply(200)

    def do_DELETE(self) -> None:
        self._record()
        self._reply(204)


@pytest.fixture
def engine() -> Iterator[tuple[str, type[FakeEngine]]]:
    handler = type("Engine", (FakeEngine,), {"calls": [], "created": [],
                                              "started": threading.Event()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()
    server.server_close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def proxy(engine, tmp_path) -> Iterator[str]:
    """The compose stack's socket proxy, its backend pointed at the stand-in engine."""
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        pytest.skip("haproxy not installed: run `make test-packages` (apt-get install haproxy)")
    port = _free_port()
    text = PROXY_CFG.read_text()
    assert "bind :2375" in text and "server docker /var/run/docker.sock" in text
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(text.replace("bind :2375", f"bind 127.0.0.1:{port}")
                   .replace("server docker /var/run/docker.sock", f"server docker {engine[0]}"))
    subprocess.run([haproxy, "-c", "-q", "-f", str(cfg)], check=True)
    proc = subprocess.Popen([haproxy, "-db", "-f", str(cfg)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("haproxy did not start") from None
                time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _run_job(docker_url: str) -> dict:
    from airflow.sdk import DAG

    cfg = LaunchConfig.model_validate({"launcher": "docker", "image": "job:1",
                                       "docker": {"docker_url": docker_url}})
    with DAG("t", schedule=None):
        op = job("detect", "detect train", ["--fold", "0"], config=cfg)
    return op.execute({})


def test_a_docker_job_runs_hardened(engine):
    address, seen = engine
    assert _run_job(f"tcp://{address}") == SUMMARY
    [body] = seen.created
    host = body["HostConfig"]
    res = resources_for("detect train")
    assert body["User"] == f"{JOB_UID}:{JOB_UID}"
    assert host["CapDrop"] == ["ALL"] and not host.get("CapAdd")
    assert host["SecurityOpt"] == ["no-new-privileges:true"]
    assert not host.get("Privileged")
    assert host["ReadonlyRootfs"] is True
    assert list(host["Tmpfs"]) == [SCRATCH]
    assert host["NanoCpus"] == int(res.cpu * 1e9)  # a hard CPU limit
    assert host["Memory"] == host["MemorySwap"] == int(res.memory_gb * 1024) * 1024**2
    [gpu] = host["DeviceRequests"]
    assert gpu["Count"] == 1 and gpu["Capabilities"] == [["gpu"]]
    env = dict(e.split("=", 1) for e in body["Env"])
    assert env["HOME"] == env["TMPDIR"] == SCRATCH and env["KZ_HOME"].startswith(SCRATCH)
    assert ("DELETE", f"/containers/{CONTAINER_ID}") in seen.calls  # removed after success


def test_the_socket_proxy_serves_a_job_and_refuses_the_rest(engine, proxy):
    import docker
    from docker.errors import APIError

    _, seen = engine
    assert _run_job(f"tcp://{proxy}") == SUMMARY  # every call of a job passes
    assert seen.created and seen.created[0]["HostConfig"]["CapDrop"] == ["ALL"]
    needed = set(seen.calls)

    client = docker.APIClient(base_url=f"tcp://{proxy}", version="1.45")
    refused = {
        "exec into a container": lambda: client.exec_create(CONTAINER_ID, ["sh"]),
        "list the host's containers": lambda: client.containers(all=True),
        "copy files into a container": lambda: client.put_archive(CONTAINER_ID, "/", b""),
        "read files out of a container": lambda: client.get_archive(CONTAINER_ID, "/etc"),
        "change a container's limits": lambda: client.update_container(CONTAINER_ID,
                                                                       mem_limit="1g"),
        "commit a container": lambda: client.commit(CONTAINER_ID),
        "build an image": lambda: client._result(client._post(client._url("/build"))),
        "delete an image": lambda: client.remove_image("job:1"),
        "volumes": lambda: client.volumes(),
        "networks": lambda: client.networks(),
        "host info": lambda: client.info(),
        "swarm secrets": lambda: client.secrets(),
        "plugins": lambda: client.plugins(),
        "a path escaping by encoding": lambda: client._result(client._post(
            client._url("/containers/{0}", f"{CONTAINER_ID}/exec"))),
    }
    for what, call in refused.items():
        with pytest.raises(APIError) as denied:
            call()
        assert denied.value.response.status_code == 403, what
    assert set(seen.calls) == needed  # none of them reached the engine
