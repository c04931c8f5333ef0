"""A job's environment from Airflow connections: the role's credentials, read at run time
on the worker by each operator (:mod:`kzjobs.orchestrate.operators`), never at DAG parse time."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def connection_env(conn: Any, kind: str) -> tuple[dict[str, str], dict[str, str]]:
    """(plain env, secret env) for a job from an Airflow connection.

    ``aws``: keys from login/password, ``endpoint_url`` and ``region_name`` from extra
    (MLflow's S3 client reads ``MLFLOW_S3_ENDPOINT_URL``). ``mlflow``: the tracking URI
    from extra ``tracking_uri`` or host/port, basic-auth user from login/password.
    ``postgres``: the promotion lock's database (``KZ_LOCK_URI``, a secret: it holds
    the password).
    """
    extra = conn.extra_dejson or {}
    plain: dict[str, str] = {}
    secret: dict[str, str] = {}
    if kind == "aws":
        if endpoint := extra.get("endpoint_url"):
            plain |= {"AWS_ENDPOINT_URL": endpoint, "MLFLOW_S3_ENDPOINT_URL": endpoint}
        if region := extra.get("region_name"):
            plain["AWS_DEFAULT_REGION"] = region
        if conn.login:
            secret["AWS_ACCESS_KEY_ID"] = conn.login
        if conn.password:
            secret["AWS_SECRET_ACCESS_KEY"] = conn.password
    elif kind == "mlflow":
        uri = extra.get("tracking_uri")
        if not uri and conn.host:
            host = conn.host if "://" in conn.host else f"http://{conn.host}"
            uri = f"{host}:{conn.port}" if conn.port else host
        if uri:
            plain["KZ_MLFLOW_URI"] = uri
        if conn.login:
            secret["MLFLOW_TRACKING_USERNAME"] = conn.login
        if conn.password:
            secret["MLFLOW_TRACKING_PASSWORD"] = conn.password
    elif kind == "postgres":
        from urllib.parse import quote

        auth = quote(conn.login or "", safe="")
        if conn.password:
            auth += ":" + quote(conn.password, safe="")
        host = f"{conn.host}:{conn.port}" if conn.port else conn.host
        # psycopg2: what the job image ships (SQLAlchemy 2.1 reads bare postgresql:// as v3)
        secret["KZ_LOCK_URI"] = f"postgresql+psycopg2://{auth}@{host}/{conn.schema or ''}"
    else:
        raise ValueError(f"unknown connection kind {kind!r}: use aws, mlflow or postgres")
    return plain, secret


def resolve_connections(connections: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(plain env, secret env) from Airflow connections, read at run time on the worker."""
    from airflow.sdk import BaseHook

    plain: dict[str, str] = {}
    secret: dict[str, str] = {}
    for conn_id, kind in connections.items():
        p, s = connection_env(BaseHook.get_connection(conn_id), kind)
        plain |= p
        secret |= s
    return plain, secret
