"""The launcher: one ``kzjobs`` command becomes one Airflow task, in one of three forms.

- ``kubernetes``: a ``KubernetesPodOperator`` running the job image, with ``nvidia.com/gpu``
  limits, GPU tolerations and a node selector for jobs that want a GPU;
- ``docker``: a ``DockerOperator`` with GPU ``device_requests`` and a large ``shm_size``;
- ``local`` (the embedded default): the same command as a subprocess of this Python.

The two container forms are hardened the same way: the image's non-root user, no
capabilities, no privilege escalation, a read-only root filesystem with one writable
scratch volume (``SCRATCH``; ``SCRATCH_ENV`` points every local write of a job there),
CPU and memory limits, and for pods the RuntimeDefault seccomp profile and no
service-account token.

The form is configuration, not code: the ``KZ_LAUNCHER`` setting, overridden by the
Airflow Variable ``kz_launcher``; the rest (image, namespace, node pool, secrets...)
comes from the Airflow Variable ``kz_launch`` (JSON, so also ``AIRFLOW_VAR_KZ_LAUNCH``).

Every command runs under a role (``JOB_ROLES``: validate, train, recognize, register,
promote), and a job gets only its role's credentials: the role's Airflow connections
(``role_connections``) and, on Kubernetes, the role's Secret (``role_secrets``). What
each role may read and write in the store is ``infra/policies/<role>.json``.

Whatever the form, a job prints its JSON summary on stdout and that summary becomes
the task's XCom return value. This module imports no Airflow at import time (the job
image has no Airflow); the operator classes live in :mod:`kzjobs.orchestrate.operators`, the
subprocess runner in :mod:`kzjobs.orchestrate.runner`, and the connections' env in
:mod:`kzjobs.orchestrate.connections` (both below this module and the operators).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

from kzjobs.core.settings import get_settings
from kzjobs.orchestrate.runner import SUMMARY_FILE_ENV, command_words

Launcher = Literal["local", "docker", "kubernetes"]
# A kubernetes pod pushes its XCom from this file (read by the provider's sidecar).
POD_SUMMARY_FILE = "/airflow/xcom/return.json"
LAUNCHER_VARIABLE = "kz_launcher"
CONFIG_VARIABLE = "kz_launch"
JOB_UID = 10001  # the job image's user and group (containers/job.Dockerfile)
# The one writable place in a job container (the root filesystem is read-only). Every
# local write goes there: temp files (tempfile, MLflow's artifact downloads), HOME and
# its caches (torch, triton, matplotlib, fontconfig), and KZ_HOME, where registered
# models are downloaded once per version.
SCRATCH = "/tmp"
SCRATCH_ENV = {
    "HOME": SCRATCH,
    "TMPDIR": SCRATCH,
    "KZ_HOME": f"{SCRATCH}/kz",
    "XDG_CACHE_HOME": f"{SCRATCH}/.cache",
    "XDG_CONFIG_HOME": f"{SCRATCH}/.config",
    "TORCH_HOME": f"{SCRATCH}/.cache/torch",
    "MPLCONFIGDIR": f"{SCRATCH}/.config/matplotlib",
    "PYTHONDONTWRITEBYTECODE": "1",  # site-packages is read-only: do not even try
}


class Resources(BaseModel):
    """What one job needs from the machine that runs it."""

    model_config = ConfigDict(extra="forbid")

    gpu: int = 0
    cpu: float = 1.0
    memory_gb: float = 4.0
    shm_gb: float = 1.0  # /dev/shm, for DataLoader workers
    # The scratch volume (SCRATCH): a disk emptyDir on Kubernetes, a tmpfs on Docker,
    # where it counts against memory_gb.
    scratch_gb: float = 4.0

    @property
    def wants_gpu(self) -> bool:
        return self.gpu > 0


_CPU = Resources()
_GPU = Resources(gpu=1, cpu=4.0, memory_gb=24.0, shm_gb=8.0)

# Each command's need; a command missing here is refused, so a new job gets classified.
JOB_RESOURCES: dict[str, Resources] = {
    "validate": _CPU,
    "folds": _CPU,
    "merge-boxes": _CPU,
    "detect train": _GPU,
    "detect predict": _GPU,
    "classify train": _GPU,
    "classify predict": _GPU,
    "pretrain": _GPU,
    "pseudo": _CPU,
    "level2 train": Resources(cpu=4.0, memory_gb=16.0),
    "bundle": _CPU,
    "evaluate": _GPU,
    "register": _CPU,
    "promote": _GPU,  # may evaluate the champion on the candidate's held-out books
    "recognize": _GPU,
    "recognize merge": _CPU,
}


Role = Literal["validate", "train", "recognize", "register", "promote"]
ROLES: tuple[Role, ...] = get_args(Role)

# Each command's role, hence its credentials (the same commands as JOB_RESOURCES; a test
# holds them equal). What a role may touch, in the store's terms (keys from
# kzjobs.orchestrate.plan and kzjobs.core.keys):
# - validate: reads datasets/ and incoming/; writes runs/*/validation/ (the quarantine);
# - train: reads datasets/, incoming/ and runs/retrain/; writes runs/retrain/ (its run);
# - recognize: reads incoming/, datasets/, the validation of its run and the model (a
#   bundle in runs/retrain/ or the registry's artifacts); writes predictions/;
# - register: reads runs/retrain/ and datasets/; writes the registry (MLflow);
# - promote: reads the registry and datasets/; writes evaluations/ and the champion
#   alias, under its own lock role.
JOB_ROLES: dict[str, Role] = {
    "validate": "validate",
    "folds": "train",
    "merge-boxes": "train",
    "detect train": "train",
    "detect predict": "train",
    "classify train": "train",
    "classify predict": "train",
    "pretrain": "train",  # writes runs/retrain/pretrained/, logs to MLflow
    "pseudo": "train",
    "level2 train": "train",
    "bundle": "train",
    "evaluate": "train",  # a retraining run's candidate, in its run's prefix
    "register": "register",
    "promote": "promote",
    "recognize": "recognize",
    "recognize merge": "recognize",
}


def _by_command(command: str, tables: Sequence[Mapping[str, Any]], what: str) -> Any:
    """The entry of ``command`` in the first table that lists it; the longest listed
    prefix wins (``validate batch`` falls back to ``validate``)."""
    words = command_words(command)
    for n in range(len(words), 0, -1):
        name = " ".join(words[:n])
        for table in tables:
            if name in table:
                return table[name]
    raise KeyError(f"unknown job command {command!r}: add it to kzjobs.orchestrate.launch.{what}")


def resources_for(command: str, overrides: Mapping[str, Resources] | None = None) -> Resources:
    """The resources of ``command`` (e.g. ``"detect train"``); unknown commands are an error."""
    return _by_command(command, (overrides or {}, JOB_RESOURCES), "JOB_RESOURCES")


def role_for(command: str) -> Role:
    """The role ``command`` runs under; unknown commands are an error."""
    return _by_command(command, (JOB_ROLES,), "JOB_ROLES")


ConnectionKind = Literal["aws", "mlflow", "postgres"]


class SecretRef(BaseModel):
    """An environment variable filled from a Kubernetes Secret."""

    model_config = ConfigDict(extra="forbid")

    env: str
    secret: str
    key: str


class KubernetesConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    namespace: str = "kzjobs"
    kubernetes_conn_id: str | None = None  # None: in-cluster config
    in_cluster: bool = True
    service_account: str | None = "kzjobs"
    image_pull_policy: str = "IfNotPresent"
    gpu_resource: str = "nvidia.com/gpu"
    gpu_node_selector: dict[str, str] = Field(default_factory=lambda: {"kzjobs.io/pool": "gpu"})
    cpu_node_selector: dict[str, str] = Field(default_factory=dict)
    gpu_tolerations: list[dict[str, Any]] = Field(
        default_factory=lambda: [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]
    )
    secrets: list[SecretRef] = Field(default_factory=list)  # for every job: no credentials
    # Each role's Secret (its S3 keys, the lock's URI...), mapped into its jobs' pods only.
    role_secrets: dict[Role, list[SecretRef]] = Field(default_factory=dict)
    startup_timeout_seconds: int = 900  # GPU nodes may scale up from zero


class DockerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # compose: the socket proxy (infra/compose/docker-proxy.cfg), never the socket itself
    docker_url: str = "unix://var/run/docker.sock"
    gpu_device_ids: list[str] | None = None  # None: `count` GPUs, any of them
    network_mode: str | None = None
    # host folder -> container folder (e.g. a local store shared with the host)
    mounts: dict[str, str] = Field(default_factory=dict)
    user: str | None = None  # None: the config's uid:gid

    @field_validator("user")
    @classmethod
    def _not_root(cls, user: str | None) -> str | None:
        if user is not None and user.split(":")[0] in ("0", "root"):
            raise ValueError("jobs never run as root: set a non-root user (or leave it unset)")
        return user


class LaunchConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    launcher: Launcher = "local"
    image: str
    # The job image's user: containers and pods run as it, never as root.
    uid: int = Field(default=JOB_UID, gt=0)
    gid: int = Field(default=JOB_UID, gt=0)
    # Plain environment for every job (KZ_STORE, KZ_MLFLOW_URI, ...); no secrets here.
    env: dict[str, str] = Field(default_factory=dict)
    # Airflow connection id -> kind, turned into job env at run time (see connection_env),
    # for every job: settings all roles share (an endpoint), never one role's keys.
    connections: dict[str, ConnectionKind] = Field(default_factory=dict)
    # Each role's own connections (its S3 keys, its lock), given to its jobs only.
    role_connections: dict[Role, dict[str, ConnectionKind]] = Field(default_factory=dict)
    resources: dict[str, Resources] = Field(default_factory=dict)
    kubernetes: KubernetesConfig = Field(default_factory=KubernetesConfig)
    docker: DockerConfig = Field(default_factory=DockerConfig)

    def resources_for(self, command: str) -> Resources:
        return resources_for(command, self.resources)

    def connections_for(self, command: str) -> dict[str, ConnectionKind]:
        """The Airflow connections a job of ``command`` gets: the shared ones and its role's."""
        return {**self.connections, **self.role_connections.get(role_for(command), {})}

    def secrets_for(self, command: str) -> list[SecretRef]:
        """The Kubernetes Secrets mapped into a pod of ``command``: shared ones, its role's."""
        k = self.kubernetes
        return [*k.secrets, *k.role_secrets.get(role_for(command), [])]


def _airflow_variable(key: str, *, json_value: bool = False) -> Any:
    """An Airflow Variable, or None outside Airflow (e.g. in the job image)."""
    try:
        from airflow.sdk import Variable
    except ImportError:
        return None
    try:
        return Variable.get(key, default=None, deserialize_json=json_value)
    except Exception:  # no API server / metadata DB reachable: the settings stand
        return None


def load_config(*, use_airflow: bool = True) -> LaunchConfig:
    """The launcher configuration: settings, then the ``kz_launch`` / ``kz_launcher`` Variables."""
    settings = get_settings()
    data: dict[str, Any] = {"launcher": settings.launcher, "image": settings.job_image}
    if use_airflow:
        data |= _airflow_variable(CONFIG_VARIABLE, json_value=True) or {}
        if launcher := _airflow_variable(LAUNCHER_VARIABLE):
            data["launcher"] = launcher
    return LaunchConfig.model_validate(data)


@lru_cache(maxsize=1)
def _parse_time_config() -> LaunchConfig:
    """One read of the Variables per DAG-file parse (Airflow parses each file in a fresh
    process), not two per task."""
    return load_config()


# ---- operator factories ---------------------------------------------------------------


def job_env(cfg: LaunchConfig, res: Resources) -> dict[str, str]:
    """The container's environment: the config's, over the scratch paths and a torch
    thread count that matches the job's CPUs (in a container torch counts the node's
    cores, not the job's share, and a job on 4 of 64 cores would run 32 threads;
    recognize sizes its page workers by it)."""
    return {"OMP_NUM_THREADS": f"{max(1, int(res.cpu))}", **SCRATCH_ENV, **cfg.env}


def _kubernetes_kwargs(cfg: LaunchConfig, command: str, res: Resources) -> dict[str, Any]:
    from airflow.providers.cncf.kubernetes.secret import Secret
    from kubernetes.client import models as k8s

    k = cfg.kubernetes
    requests = {"cpu": f"{res.cpu:g}", "memory": f"{res.memory_gb:g}Gi"}
    limits = dict(requests)
    if res.wants_gpu:
        limits[k.gpu_resource] = str(res.gpu)
    seccomp = k8s.V1SeccompProfile(type="RuntimeDefault")
    # The job's container and the XCom sidecar: the restricted Pod Security Standard.
    container = k8s.V1SecurityContext(
        run_as_non_root=True,
        run_as_user=cfg.uid,
        run_as_group=cfg.gid,
        privileged=False,
        allow_privilege_escalation=False,
        capabilities=k8s.V1Capabilities(drop=["ALL"]),
        read_only_root_filesystem=True,
        seccomp_profile=seccomp,
    )
    pod = k8s.V1PodSecurityContext(
        run_as_non_root=True,
        run_as_user=cfg.uid,
        run_as_group=cfg.gid,
        fs_group=cfg.gid,
        seccomp_profile=seccomp,
    )
    volumes = [
        k8s.V1Volume(
            name="dshm",
            empty_dir=k8s.V1EmptyDirVolumeSource(medium="Memory", size_limit=f"{res.shm_gb:g}Gi"),
        ),
        k8s.V1Volume(
            name="scratch", empty_dir=k8s.V1EmptyDirVolumeSource(size_limit=f"{res.scratch_gb:g}Gi")
        ),
    ]
    return {
        "image": cfg.image,
        "cmds": ["kzjobs", *command_words(command)],
        "name": "kz-" + "-".join(command_words(command)),
        "namespace": k.namespace,
        "kubernetes_conn_id": k.kubernetes_conn_id,
        "in_cluster": k.in_cluster,
        "service_account_name": k.service_account,
        # A job talks to S3 and MLflow, never to the Kubernetes API.
        "automount_service_account_token": False,
        "security_context": pod,
        "container_security_context": container,
        "xcom_sidecar_container_security_context": container,
        "image_pull_policy": k.image_pull_policy,
        "env_vars": {**job_env(cfg, res), SUMMARY_FILE_ENV: POD_SUMMARY_FILE},
        "secrets": [Secret("env", s.env, s.secret, s.key) for s in cfg.secrets_for(command)],
        "container_resources": k8s.V1ResourceRequirements(requests=requests, limits=limits),
        "node_selector": dict(k.gpu_node_selector if res.wants_gpu else k.cpu_node_selector),
        "tolerations": [k8s.V1Toleration(**t) for t in k.gpu_tolerations]
        if res.wants_gpu
        else [],
        "volumes": volumes,
        "volume_mounts": [
            k8s.V1VolumeMount(name="dshm", mount_path="/dev/shm"),
            k8s.V1VolumeMount(name="scratch", mount_path=SCRATCH),
        ],
        "labels": {"app.kubernetes.io/name": "kzjobs", "kzjobs.io/job": command_words(command)[0]},
        "do_xcom_push": True,
        "get_logs": True,
        "on_finish_action": "delete_succeeded_pod",
        "startup_timeout_seconds": k.startup_timeout_seconds,
        "connections": cfg.connections_for(command),
    }


def _docker_kwargs(cfg: LaunchConfig, command: str, res: Resources) -> dict[str, Any]:
    from docker.types import DeviceRequest, Mount

    d = cfg.docker
    gpus = None
    if res.wants_gpu:
        gpus = [
            DeviceRequest(device_ids=d.gpu_device_ids, capabilities=[["gpu"]])
            if d.gpu_device_ids
            else DeviceRequest(count=res.gpu, capabilities=[["gpu"]])
        ]
    memory = f"{int(res.memory_gb * 1024)}m"
    return {
        "image": cfg.image,
        "entrypoint": ["kzjobs", *command_words(command)],
        "environment": job_env(cfg, res),
        "docker_url": d.docker_url,
        "device_requests": gpus,
        "shm_size": int(res.shm_gb * 1024**3),
        "mem_limit": memory,
        "cpus": res.cpu,  # the provider makes it a CPU *share*; nano_cpus below caps it
        "network_mode": d.network_mode,
        "mounts": [Mount(target=dst, source=src, type="bind") for src, dst in d.mounts.items()],
        "mount_tmp_dir": False,
        "user": d.user or f"{cfg.uid}:{cfg.gid}",
        "privileged": False,
        "cap_add": None,
        # What the provider has no parameter for (KzDockerOperator adds it to the
        # container's host config): the same hardening as a pod's.
        "host_config": {
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges:true"],
            "read_only": True,
            "tmpfs": {SCRATCH: f"size={int(res.scratch_gb * 1024)}m,mode=1777,nosuid,nodev"},
            "nano_cpus": int(res.cpu * 1e9),
            "memswap_limit": memory,  # no swap beyond the memory limit
        },
        "auto_remove": "success",
        "xcom_all": True,  # the summary is parsed out of the whole log
        "connections": cfg.connections_for(command),
    }


def _local_kwargs(cfg: LaunchConfig, command: str, res: Resources) -> dict[str, Any]:
    return {"command": command, "env": dict(cfg.env), "connections": cfg.connections_for(command)}


def operator_spec(cfg: LaunchConfig, command: str) -> tuple[type, str, dict[str, Any]]:
    """(operator class, name of its argument-list field, constructor kwargs) for a command."""
    res = cfg.resources_for(command)
    # Each launcher's operator imports only its own client (kubernetes, docker).
    if cfg.launcher == "kubernetes":
        from kzjobs.orchestrate.operators.pod import KzPodOperator

        return KzPodOperator, "arguments", _kubernetes_kwargs(cfg, command, res)
    if cfg.launcher == "docker":
        from kzjobs.orchestrate.operators.container import KzDockerOperator

        return KzDockerOperator, "command", _docker_kwargs(cfg, command, res)
    from kzjobs.orchestrate.operators.local import KzLocalJobOperator

    return KzLocalJobOperator, "args", _local_kwargs(cfg, command, res)


def job(
    task_id: str,
    command: str,
    args: Sequence[str] | Any = (),
    *,
    expand: Any = None,
    config: LaunchConfig | None = None,
    **task_kwargs: Any,
) -> Any:
    """An Airflow task running ``kzjobs <command> <args>`` with the configured launcher.

    ``args`` may hold Jinja templates or be an XComArg of a list; ``expand`` (an XComArg
    of a list of argument lists) maps the task, one job per argument list.
    """
    cfg = config or _parse_time_config()
    cls, field, kwargs = operator_spec(cfg, command)
    kwargs |= task_kwargs
    if expand is not None:
        return cls.partial(task_id=task_id, **kwargs).expand(**{field: expand})
    return cls(task_id=task_id, **kwargs, **{field: args})


def stage_args(plan: Any, stage: str) -> Any:
    """The argument lists of a mapped stage, picked out of a plan task's dict.

    Airflow maps only over a task's whole return value, not over one key of a
    ``multiple_outputs`` task, hence this small task per mapped stage.
    """
    from airflow.sdk import task

    @task(task_id=f"{stage}_args")
    def pick(plan: dict[str, Any]) -> list[list[str]]:
        return plan[stage]

    return pick(plan)


def mapped_job(task_id: str, command: str, plan: Any, **kwargs: Any) -> Any:
    """One job per argument list in ``plan[task_id]`` (a mapped task)."""
    return job(task_id, command, expand=stage_args(plan, task_id), **kwargs)
