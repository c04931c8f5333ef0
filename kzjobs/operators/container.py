"""The one-GPU-host launcher: a ``kzjobs`` command in a container of the job image."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow.providers.docker.operators.docker import DockerOperator

from kzjobs.launch import parse_summary, resolve_connections


class KzDockerOperator(DockerOperator):
    """A container running one job; the JSON summary in its log is the return value.

    Secrets from Airflow connections go to ``private_environment``, which Airflow
    neither renders nor shows.
    """

    def __init__(self, *, connections: Mapping[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.connections = dict(connections or {})

    def execute(self, context: Any) -> Any:
        if self.connections:
            plain, secret = resolve_connections(self.connections)
            self.environment = {**self.environment, **plain}
            self._private_environment = {**self._private_environment, **secret}
        lines = super().execute(context)
        if not self.do_xcom_push or lines is None:
            return None
        return parse_summary("\n".join(lines) if isinstance(lines, list) else str(lines))
