"""Users of an MLflow tracking server that runs its basic-auth app.

The server (``mlflow server --app-name basic-auth``) creates its admin from
``MLFLOW_AUTH_ADMIN_USERNAME`` / ``MLFLOW_AUTH_ADMIN_PASSWORD`` on its first start (MLflow
3.17 ships no default password and refuses to start without one). The jobs do not log in
as the admin: they log in as a user of their own, which an operator (or the compose
stack's ``mlflow-init``) makes once with :func:`ensure_user`, acting as the admin. Jobs get
that user's credentials as ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``,
secret env from the launcher's ``mlflow`` connection
(:func:`kzjobs.orchestrate.connections.connection_env`).

    MLFLOW_TRACKING_USERNAME=admin MLFLOW_TRACKING_PASSWORD=... KZ_MLFLOW_JOB_PASSWORD=... \\
        python -m kzjobs.orchestrate.mlflow_auth http://mlflow:5000 kzjobs
"""

from __future__ import annotations

import os
from typing import Annotated

import typer


def ensure_user(tracking_uri: str, username: str, password: str) -> str:
    """Create ``username`` with ``password``, or set the password of an existing one.

    Acts as whoever ``MLFLOW_TRACKING_USERNAME`` / ``_PASSWORD`` name (an admin).
    Idempotent: returns ``"created"`` or ``"updated"``.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.server import get_app_client

    auth = get_app_client("basic-auth", tracking_uri=tracking_uri)
    try:
        auth.create_user(username=username, password=password)
        return "created"
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    auth.update_user_password(username=username, password=password)
    return "updated"


def main(
    tracking_uri: Annotated[str, typer.Argument(help="The tracking server, e.g. http://mlflow:5000")],
    username: Annotated[str, typer.Argument(help="The jobs' MLflow user.")],
    password_env: Annotated[
        str, typer.Option(help="Environment variable holding the user's password (never argv).")
    ] = "KZ_MLFLOW_JOB_PASSWORD",
) -> None:
    """Create (or re-password) the jobs' MLflow user, logged in as the admin."""
    password = os.environ.get(password_env)
    if not password:
        raise typer.BadParameter(f"{password_env} is not set or empty", param_hint="--password-env")
    typer.echo(f"MLflow user {username}: {ensure_user(tracking_uri, username, password)}")


if __name__ == "__main__":
    typer.run(main)
