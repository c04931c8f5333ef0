"""The one-GPU-host launcher: a ``kzjobs`` command in a container of the job image."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow.providers.docker.operators.docker import DockerOperator

from kzjobs.orchestrate.connections import resolve_connections
from kzjobs.orchestrate.runner import parse_summary


class _HostConfigOverlay:
    """The Docker API client, with ``extra`` added to every container's host config.

    The provider builds the host config itself and has no parameter for ``cap_drop``,
    ``security_opt``, ``read_only``, ``tmpfs`` or ``nano_cpus`` (its ``cpus`` is only a
    CPU share); wrapping this one call adds them without copying its container code.
    """

    def __init__(self, client: Any, extra: Mapping[str, Any]) -> None:
        self._client = client
        self._extra = dict(extra)

    def create_host_config(self, **kwargs: Any) -> Any:
        return self._client.create_host_config(**{**kwargs, **self._extra})

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


class KzDockerOperator(DockerOperator):
    """A container running one job; the JSON summary in its log is the return value.

    Secrets from Airflow connections go to ``private_environment``, which Airflow
    neither renders nor shows. ``host_config`` holds the Docker host settings the
    provider lacks (the launcher's hardening, :func:`kzjobs.orchestrate.launch._docker_kwargs`).
    """

    def __init__(
        self,
        *,
        connections: Mapping[str, str] | None = None,
        host_config: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.connections = dict(connections or {})
        self.host_config = dict(host_config or {})

    @property
    def cli(self) -> Any:
        return _HostConfigOverlay(super().cli, self.host_config)

    def execute(self, context: Any) -> Any:
        if self.connections:
            plain, secret = resolve_connections(self.connections)
            self.environment = {**self.environment, **plain}
            self._private_environment = {**self._private_environment, **secret}
        lines = super().execute(context)
        if not self.do_xcom_push or lines is None:
            return None
        return parse_summary("\n".join(lines) if isinstance(lines, list) else str(lines))
