"""The embedded launcher: a ``kzjobs`` command as a subprocess on the worker."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException

from kzjobs.orchestrate.connections import resolve_connections
from kzjobs.orchestrate.runner import JobFailed, run_local


class KzLocalJobOperator(BaseOperator):
    """Runs ``kzjobs <command> <args>`` here; its JSON summary is the return value (XCom)."""

    template_fields: Sequence[str] = ("args", "env")
    ui_color = "#e8f1e4"

    def __init__(
        self,
        *,
        command: str,
        args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        connections: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.command = command
        self.args = args
        self.env = dict(env or {})
        self.connections = dict(connections or {})
        self._proc: subprocess.Popen | None = None

    def execute(self, context: Any) -> Any:
        plain, secret = resolve_connections(self.connections) if self.connections else ({}, {})
        env = {**self.env, **plain, **secret}
        self.log.info("kzjobs %s %s", self.command, " ".join(map(str, self.args)))
        try:
            return run_local(
                self.command,
                [str(a) for a in self.args],
                env=env,
                log=self.log.info,
                on_start=self._started,
            )
        except JobFailed as exc:
            raise AirflowException(str(exc)) from exc

    def _started(self, proc: subprocess.Popen) -> None:
        self._proc = proc

    def on_kill(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
