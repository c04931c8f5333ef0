"""The JSON summary every ``kzjobs`` command prints."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import typer


def emit(result: Any) -> None:
    """Print a job's summary as JSON on stdout (logs and progress go to stderr).

    With ``KZ_SUMMARY_FILE`` set, the summary is also written there: a Kubernetes pod's
    XCom sidecar reads it from ``/airflow/xcom/return.json``.
    """
    text = json.dumps(result, indent=2, ensure_ascii=False, default=str)
    typer.echo(text)
    if path := os.environ.get("KZ_SUMMARY_FILE"):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text, encoding="utf-8")
