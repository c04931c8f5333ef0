"""The cluster launcher: a ``kzjobs`` command as a pod of the job image."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

from kzjobs.orchestrate.connections import resolve_connections


class KzPodOperator(KubernetesPodOperator):
    """A pod running one job; the job writes its summary where the XCom sidecar reads it.

    Non-secret settings from Airflow connections (endpoints, tracking URI) are added to
    the pod's env at run time. Secrets are not copied into the pod spec, where anyone
    who can read pods would see them: they come from Kubernetes Secrets
    (``kz_launch.kubernetes.secrets``).
    """

    def __init__(self, *, connections: Mapping[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.connections = dict(connections or {})

    def execute(self, context: Any) -> Any:
        if self.connections:
            plain, secret = resolve_connections(self.connections)
            if secret:
                self.log.info(
                    "not copying %s into the pod spec: map them from Kubernetes Secrets",
                    sorted(secret),
                )
            if isinstance(self.env_vars, dict):
                self.env_vars = {**self.env_vars, **plain}
            else:
                self.env_vars = [*self.env_vars, *self._plain_env(plain)]
        return super().execute(context)

    @staticmethod
    def _plain_env(env: Mapping[str, str]) -> list[Any]:
        from kubernetes.client import models as k8s

        return [k8s.V1EnvVar(name=k, value=v) for k, v in env.items()]
