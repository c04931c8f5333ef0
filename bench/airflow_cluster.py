"""Airflow 3 with the CeleryExecutor on this machine, as subprocesses: for the Celery test
(``tests/dags/test_celery.py``) and the 1 -> 2 worker benchmark (``bench/celery.py``).

One :class:`CeleryCluster` is a fresh ``AIRFLOW_HOME``, a PostgreSQL metadata database
(also Celery's result backend), Redis as the broker with a queue of its own (so runs on
the same Redis never take each other's tasks), and the components Airflow 3 needs:
``api-server`` (workers report through its Execution API), ``scheduler``,
``dag-processor`` and any number of ``celery worker`` processes. Each component gets its
own session, and :meth:`CeleryCluster.kill_worker` SIGKILLs a worker with every process
under it (Airflow puts each task in a process group of its own), as a machine dying would.

Everything is driven through Airflow's public REST API. Top-level imports are standard
library only: the workers import :func:`worker_hostname` from here.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
HOSTNAME_ENV = "KZ_AIRFLOW_HOSTNAME"
PG_ADMIN_URI = os.environ.get("KZ_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("KZ_TEST_REDIS", "redis://127.0.0.1:6379")
TERMINAL = {"success", "failed"}


def worker_hostname() -> str:
    """Airflow's ``[core] hostname_callable`` here: the worker's own name, so task
    instances say which of several workers on one machine ran them."""
    return os.environ.get(HOSTNAME_ENV) or socket.getfqdn()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def temporary_database(admin_uri: str = PG_ADMIN_URI, *,
                       prefix: str = "kz_airflow") -> Iterator[str]:
    """A fresh PostgreSQL database (a ``postgresql+psycopg2://`` URI), dropped afterwards.
    SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; the jobs ship psycopg2."""
    import psycopg2

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(admin_uri)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"')
        base = admin_uri.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg2://")
        yield f"{base}/{name}"
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


# ---- processes ---------------------------------------------------------------------------


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                stat = fh.read()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(entry))
    return kids


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (parents first)."""
    kids = _children()
    tree, todo = [], [pid]
    while todo:
        p = todo.pop(0)
        tree.append(p)
        todo += kids.get(p, [])
    return tree


def _signal_all(pids: list[int], sig: int) -> None:
    for p in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(p, sig)


def kill_trees(procs: list[subprocess.Popen], *, grace: float = 0.0) -> None:
    """End each process, everything under it and its process group (each component
    leads its own session; Airflow runs every task in a group of its own).

    The trees are read before anything dies (orphans lose their parent link). With
    ``grace`` they get SIGTERM and up to that many seconds in all; then, or at once,
    they are frozen (so nothing forks meanwhile) and SIGKILLed.
    """
    procs = [p for p in procs if p.poll() is None]
    pids = [pid for p in procs for pid in process_tree(p.pid)]
    if grace:
        _signal_all(pids, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.0, deadline - time.monotonic()))
        pids = [p for p in pids if os.path.exists(f"/proc/{p}")]
    _signal_all(pids, signal.SIGSTOP)
    pids = list(dict.fromkeys(
        pids + [pid for p in procs if p.poll() is None for pid in process_tree(p.pid)]))
    for proc in procs:
        if proc.poll() is None:  # not reaped yet, so its group id is still ours
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
    _signal_all(pids, signal.SIGKILL)
    for proc in procs:
        proc.wait()


# ---- the cluster -------------------------------------------------------------------------


@dataclass
class CeleryCluster:
    """An Airflow with the CeleryExecutor under ``home``; see the module docstring."""

    home: Path
    db_uri: str
    env: dict[str, str]
    api_url: str
    queue: str
    broker_url: str
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    _token: str | None = None

    # -- processes
    def _start(self, name: str, argv: list[str], **env: str) -> subprocess.Popen:
        log = open(self.home / f"{name}.log", "ab")  # noqa: SIM115 (the process owns it)
        airflow = str(Path(sys.executable).with_name("airflow"))
        proc = subprocess.Popen([airflow, *argv], env=self.env | env, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=self.home, start_new_session=True)
        log.close()
        self.procs[name] = proc
        return proc

    def start_core(self) -> None:
        """api-server, scheduler and dag-processor (no triggerer: nothing defers)."""
        port = urllib.parse.urlparse(self.api_url).port
        self._start("api-server", ["api-server", "-H", "127.0.0.1", "-p", str(port), "-w", "1"])
        self._start("scheduler", ["scheduler", "--skip-serve-logs"])
        self._start("dag-processor", ["dag-processor"])

    def start_worker(self, name: str) -> subprocess.Popen:
        """A Celery worker running one task at a time; tasks it runs report ``name`` as
        their hostname."""
        # Celery node names are global to the Redis database, where other clusters may
        # have a "w1" too: the queue's unique suffix keeps them apart.
        return self._start(name, [
            "celery", "worker", "-H", f"{name}-{self.queue}", "-q", self.queue, "-c", "1",
            "--skip-serve-logs",
            "--without-mingle", "--without-gossip", "--pid", str(self.home / f"{name}.pid"),
        ], **{HOSTNAME_ENV: name})

    def wait_worker_ready(self, name: str, timeout: float = 120) -> None:
        log = self.home / f"{name}.log"
        self._wait(lambda: b" ready." in log.read_bytes(), timeout, f"worker {name} ready",
                   name)

    def kill_worker(self, name: str) -> None:
        """SIGKILL the worker and every process under it: tasks get no chance to report."""
        kill_trees([self.procs[name]])

    def stop(self) -> None:
        kill_trees(list(self.procs.values()), grace=5.0)

    def log_tail(self, name: str, chars: int = 3000) -> str:
        path = self.home / f"{name}.log"
        return path.read_bytes()[-chars:].decode(errors="replace") if path.exists() else ""

    def _check_alive(self) -> None:
        for name in ("api-server", "scheduler", "dag-processor"):
            proc = self.procs.get(name)
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n"
                                   f"{self.log_tail(name)}")

    def _wait(self, ready: Callable[[], Any], timeout: float, what: str,
              log: str = "scheduler") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            with contextlib.suppress(OSError):
                if value := ready():
                    return value
            time.sleep(0.5)
        raise TimeoutError(f"no {what} after {timeout:.0f} s; {log} log:\n{self.log_tail(log)}")

    # -- REST API
    def _request(self, method: str, path: str, body: Any = None, *, auth: bool = True) -> Any:
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self._auth()}"
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.api_url + path, data=data, method=method,
                                     headers=headers)
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read() or b"null")

    def _auth(self) -> str:
        if self._token is None:  # simple auth manager, everyone admin: a token for the asking
            self._token = self._request("GET", "/auth/token", auth=False)["access_token"]
        return self._token

    def api(self, method: str, path: str, body: Any = None) -> Any:
        """A call to the public REST API (``/api/v2`` + ``path``)."""
        return self._request(method, "/api/v2" + path, body)

    def wait_api(self, timeout: float = 180) -> None:
        def up() -> bool:
            try:
                return self._request("GET", "/api/v2/monitor/health", auth=False) is not None
            except urllib.error.URLError:
                return False

        self._wait(up, timeout, "API server", "api-server")

    def unpause(self, dag_id: str, timeout: float = 180) -> None:
        """Once the dag-processor has parsed ``dag_id``, unpause it (DAGs start paused, so
        the scheduled ones, such as kz_retrain, never take the workers)."""
        def parsed() -> bool:
            try:
                return self.api("PATCH", f"/dags/{dag_id}", {"is_paused": False}) is not None
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    return False
                raise

        self._wait(parsed, timeout, f"DAG {dag_id}", "dag-processor")

    def trigger(self, dag_id: str, conf: dict[str, Any], run_id: str | None = None) -> str:
        run_id = run_id or f"manual__{uuid.uuid4().hex[:8]}"
        self.api("POST", f"/dags/{dag_id}/dagRuns",
                 {"dag_run_id": run_id, "logical_date": None, "conf": conf})
        return run_id

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        return self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=1000"
                        )["task_instances"]

    def tries(self, dag_id: str, run_id: str, task_id: str, map_index: int) -> list[dict]:
        """Every try of one task instance, the current one included."""
        return self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/"
                        f"{map_index}/tries")["task_instances"]

    def xcom(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> Any:
        entry = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/"
                         f"xcomEntries/return_value?map_index={map_index}&deserialize=true")
        value = entry["value"]
        return json.loads(value) if isinstance(value, str) else value

    def wait_run(self, dag_id: str, run_id: str, timeout: float,
                 on_poll: Callable[[], None] | None = None, every: float = 0.5) -> str:
        """Until the DAG run ends; ``on_poll`` runs between polls. Its final state."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            state = self.dag_run(dag_id, run_id)["state"]
            if state in TERMINAL:
                return state
            if on_poll:
                on_poll()
            time.sleep(every)
        tis = {(t["task_id"], t["map_index"]): (t["state"], t["try_number"])
               for t in self.task_instances(dag_id, run_id)}
        raise TimeoutError(f"{dag_id} {run_id} still running after {timeout:.0f} s: {tis}\n"
                           f"scheduler log:\n{self.log_tail('scheduler')}")


def cluster_env(home: Path, db_uri: str, *, api_port: int, queue: str, broker_url: str,
                heartbeat_timeout: int = 20, retry_delay: int = 2,
                **extra: str) -> dict[str, str]:
    """The environment every component shares; ``extra`` adds job settings (``KZ_*``)."""
    from kzjobs.demo import airflow_env

    api = f"http://127.0.0.1:{api_port}"
    result_backend = "db+" + db_uri
    env = airflow_env(home, **{
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db_uri,
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CELERY__BROKER_URL": broker_url,
        "AIRFLOW__CELERY__RESULT_BACKEND": result_backend,
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE": queue,
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{api}/execution/",
        "AIRFLOW__API__BASE_URL": api,
        "AIRFLOW__API__PORT": str(api_port),
        # Per cluster, never stored: the components only need to agree among themselves.
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",  # a local throwaway cluster
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": f"{__name__}.worker_hostname",
        # A killed worker's task stops heartbeating: fail it (and retry it) in seconds,
        # not after the default 5 minutes; the retry waits for the shortened delay.
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(heartbeat_timeout),
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "3",
        "AIRFLOW__CORE__DEFAULT_TASK_RETRY_DELAY": str(retry_delay),
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "600",  # the CPU is shared
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    })
    return env | extra


@contextlib.contextmanager
def celery_cluster(home: Path, db_uri: str, *, redis_url: str = REDIS_URL,
                   workers: int = 2, heartbeat_timeout: int = 20, retry_delay: int = 2,
                   **extra: str) -> Iterator[CeleryCluster]:
    """A migrated, started cluster with ``workers`` workers (``w1``, ``w2``...), its API up.

    Every process is ended on exit, whatever happened; the Redis queue is emptied.
    """
    from kzjobs.demo import migrate

    home.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:8]
    queue = f"kz-{tag}"
    # One of Redis' 16 databases, away from 0: the queue name alone keeps runs apart.
    broker_url = f"{redis_url}/{1 + int(tag, 16) % 15}"
    port = free_port()
    env = cluster_env(home, db_uri, api_port=port, queue=queue, broker_url=broker_url,
                      heartbeat_timeout=heartbeat_timeout, retry_delay=retry_delay, **extra)
    migrate(env)
    cluster = CeleryCluster(home=home, db_uri=db_uri, env=env,
                            api_url=f"http://127.0.0.1:{port}", queue=queue,
                            broker_url=broker_url)
    try:
        cluster.start_core()
        for i in range(1, workers + 1):
            cluster.start_worker(f"w{i}")
        cluster.wait_api()
        yield cluster
    finally:
        cluster.stop()
        _forget_queue(broker_url, tag)


def _forget_queue(broker_url: str, tag: str) -> None:
    """Drop what this cluster left in Redis: its queue, its bindings, its workers' control
    bindings, and any message a killed worker left unacknowledged (so no other consumer
    of this Redis database ever restores it). Everything of ours carries ``tag``."""
    import redis

    client = redis.Redis.from_url(broker_url)
    pidbox = "_kombu.binding.celery.pidbox"
    try:
        if keys := client.keys(f"*{tag}*"):
            client.delete(*keys)
        for member in client.smembers(pidbox):
            if tag.encode() in member:
                client.srem(pidbox, member)
        for key, raw in client.hscan_iter("unacked"):
            with contextlib.suppress(ValueError, TypeError, IndexError):
                if tag in json.loads(raw)[2]:  # (message, exchange, routing key)
                    client.hdel("unacked", key)
                    client.zrem("unacked_index", key)
    except redis.RedisError:
        pass
    finally:
        client.close()
