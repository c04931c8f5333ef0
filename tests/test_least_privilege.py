"""Least privilege: each job role's credentials reach only its own prefixes.

The S3 half runs against moto's server in a process of its own, started with
``INITIAL_NO_AUTH_ACTION_COUNT`` so that it checks every request's signature and IAM
policies (the session's moto server, in this process, stays open). Each role is an IAM
user with the policy document the compose stack gives MinIO (``infra/policies``), and
the jobs' own store (``S3Store``) does the reads and writes. The PostgreSQL half creates
promotion's lock role with the compose stack's SQL on a throwaway database.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kzjobs.core.store import S3Store, StoreError
from kzjobs.orchestrate.launch import JOB_RESOURCES, JOB_ROLES, ROLES, LaunchConfig, job, role_for
from tests.conftest import PG_ADMIN_URI, free_port

REPO = Path(__file__).resolve().parents[1]
POLICIES = REPO / "infra" / "policies"
STORE, REGISTRY = "kz-store", "kz-mlflow"
# moto checks a request against the name of its API operation, where IAM checks the
# action the operation needs: ListObjectsV2 needs s3:ListBucket, HeadObject s3:GetObject.
MOTO_ALIASES = {"s3:ListBucket": ["s3:ListObjectsV2", "s3:ListObjects"],
                "s3:GetObject": ["s3:HeadObject"]}


def policy(role: str) -> dict:
    return json.loads((POLICIES / f"{role}.json").read_text())


def for_moto(document: dict) -> str:
    statements = []
    for st in document["Statement"]:
        actions = [st["Action"]] if isinstance(st["Action"], str) else st["Action"]
        extra = [a for act in actions for a in MOTO_ALIASES.get(act, [])]
        statements.append(st | {"Action": [*actions, *extra]})
    return json.dumps(document | {"Statement": statements})


@pytest.fixture(scope="module")
def iam_s3() -> Iterator[dict]:
    """moto's server with IAM checks on, its buckets, and an access key per role."""
    import boto3

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # The first 3 requests go unchecked: they create the admin who makes the rest.
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=1)
                break
            except OSError:
                time.sleep(0.1)

        def client(service: str, key: str = "AKIDBOOTSTRAP", secret: str = "x"):
            return boto3.client(service, endpoint_url=url, region_name="us-east-1",
                                aws_access_key_id=key, aws_secret_access_key=secret)

        boot = client("iam")
        boot.create_user(UserName="admin")
        boot.put_user_policy(UserName="admin", PolicyName="all", PolicyDocument=json.dumps(
            {"Version": "2012-10-17",
             "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))
        key = boot.create_access_key(UserName="admin")["AccessKey"]
        admin = (key["AccessKeyId"], key["SecretAccessKey"])
        iam, s3 = client("iam", *admin), client("s3", *admin)
        for bucket in (STORE, REGISTRY):
            s3.create_bucket(Bucket=bucket)
        keys = {}
        for role in ROLES:
            iam.create_user(UserName=f"kz-{role}")
            iam.put_user_policy(UserName=f"kz-{role}", PolicyName=role,
                                PolicyDocument=for_moto(policy(role)))
            k = iam.create_access_key(UserName=f"kz-{role}")["AccessKey"]
            keys[role] = (k["AccessKeyId"], k["SecretAccessKey"])
        # What earlier jobs left: collections, a training run, a registered model.
        for bucket, k in [(STORE, "incoming/b1/images/bk_001.jpg"),
                          (STORE, "datasets/train/train.csv"),
                          (STORE, "runs/retrain/r1/detect/fold0/model.pt"),
                          (STORE, "runs/recognize/b1/r2/validation/passed.json"),
                          (REGISTRY, "artifacts/1/m/artifacts/bundle/bundle.json")]:
            s3.put_object(Bucket=bucket, Key=k, Body=b"x")
        yield {"url": url, "keys": keys, "admin": s3}
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture
def as_role(iam_s3: dict, monkeypatch: pytest.MonkeyPatch):
    """``as_role(role, bucket)``: the jobs' own S3 store with that role's keys."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", iam_s3["url"])
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")

    import boto3

    def store(role: str, bucket: str = STORE) -> S3Store:
        key, secret = iam_s3["keys"][role]
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", key)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
        # boto3's default session keeps the first credentials it found; a job is a
        # process of its own, which this test emulates with a fresh session.
        monkeypatch.setattr(boto3, "DEFAULT_SESSION", None)
        return S3Store(f"s3://{bucket}", max_attempts=1)

    return store


# (bucket, key) each role writes in its own job, and where the others write.
OWN_WRITES = {
    "validate": [(STORE, "runs/recognize/b1/r2/validation/quarantine.json"),
                 (STORE, "runs/retrain/r1/validation/passed.json")],
    "train": [(STORE, "runs/retrain/r1/folds.json"),
              (STORE, "runs/retrain/r1/classify/resnet18/fold0/model.pt")],
    "recognize": [(STORE, "predictions/b1/pages/bk_001.json"),
                  (STORE, "predictions/b1/submission.csv")],
    "register": [(REGISTRY, "artifacts/2/m/artifacts/bundle/bundle.json")],
    "promote": [(STORE, "evaluations/kz-recognizer/v2/h1/submission.csv")],
}
OTHERS = {  # and a few places no job writes
    "anywhere": [(STORE, "incoming/b1/images/bk_001.jpg"), (STORE, "datasets/train/train.csv"),
                 (STORE, "top-level.json")],
}
# Reads beyond a role's needs: the model weights and the registry, for validation.
REFUSED_READS = {
    "validate": [(STORE, "runs/retrain/r1/detect/fold0/model.pt"),
                 (REGISTRY, "artifacts/1/m/artifacts/bundle/bundle.json")],
    "train": [(REGISTRY, "artifacts/1/m/artifacts/bundle/bundle.json")],
    "register": [(STORE, "runs/recognize/b1/r2/validation/passed.json")],
}
OWN_READS = {
    "validate": [(STORE, "incoming/b1/images/bk_001.jpg"), (STORE, "datasets/train/train.csv")],
    "train": [(STORE, "datasets/train/train.csv"), (STORE, "incoming/b1/images/bk_001.jpg")],
    "recognize": [(STORE, "incoming/b1/images/bk_001.jpg"),
                  (STORE, "runs/recognize/b1/r2/validation/passed.json"),
                  (STORE, "runs/retrain/r1/detect/fold0/model.pt"),
                  (REGISTRY, "artifacts/1/m/artifacts/bundle/bundle.json")],
    "register": [(STORE, "runs/retrain/r1/detect/fold0/model.pt")],
    "promote": [(STORE, "datasets/train/train.csv"),
                (REGISTRY, "artifacts/1/m/artifacts/bundle/bundle.json")],
}


@pytest.mark.parametrize("role", ROLES)
def test_a_role_writes_where_its_jobs_write_and_is_refused_elsewhere(role, as_role):
    for bucket, key in OWN_WRITES[role]:
        store = as_role(role, bucket)
        store.write_bytes(key, b"mine")
        assert store.read_bytes(key) == b"mine" and store.exists(key)
    refused = [w for other, ws in OWN_WRITES.items() if other != role for w in ws]
    for bucket, key in refused + OTHERS["anywhere"]:
        store = as_role(role, bucket)
        with pytest.raises(StoreError, match=rf"access denied: .* may not write '{key}'"):
            store.write_bytes(key, b"not mine")
        with pytest.raises(StoreError, match="access denied"):
            store.write_once(key, b"not mine")
    for bucket, key in OWN_READS[role]:
        assert as_role(role, bucket).read_bytes(key)
    for bucket, key in REFUSED_READS.get(role, []):
        with pytest.raises(StoreError, match=rf"access denied: .* may not read '{key}'"):
            as_role(role, bucket).read_bytes(key)


def test_the_refusals_are_the_policies_and_unknown_keys_get_nothing(iam_s3, as_role):
    """The server itself takes the writes refused above from a principal allowed them
    (the policies drew the lines, not a broken server), and refuses unknown keys."""
    import boto3
    from botocore.exceptions import ClientError

    with pytest.raises(StoreError, match="access denied"):
        as_role("validate").write_bytes("predictions/b1/by-admin.csv", b"a")
    iam_s3["admin"].put_object(Bucket=STORE, Key="predictions/b1/by-admin.csv", Body=b"a")
    assert as_role("recognize").read_bytes("predictions/b1/by-admin.csv") == b"a"
    stranger = boto3.client("s3", endpoint_url=iam_s3["url"], region_name="us-east-1",
                            aws_access_key_id="AKIDNOBODY", aws_secret_access_key="x")
    with pytest.raises(ClientError, match="InvalidAccessKeyId"):
        stranger.get_object(Bucket=STORE, Key="datasets/train/train.csv")


def test_training_cannot_forge_a_validation_and_recognition_cannot_unpublish(as_role):
    """Explicit denials inside a role's own prefix: training writes its run but not the
    run's validation (validation's word on the data), and recognition deletes its work
    files but not a published output."""
    train = as_role("train")
    with pytest.raises(StoreError, match="access denied"):
        train.write_bytes("runs/retrain/r1/validation/passed.json", b"[]")
    recognize = as_role("recognize")
    recognize.write_once("predictions/b2/report.json", b"{}")
    recognize.write_bytes("predictions/b2/frames/bk_001.npz", b"f")
    recognize.delete("predictions/b2/frames/bk_001.npz")
    with pytest.raises(StoreError, match=r"access denied: .* may not delete"):
        recognize.delete("predictions/b2/report.json")
    assert recognize.read_bytes("predictions/b2/report.json") == b"{}"
    # Its listings work (a missing key is a 404, not a refusal).
    assert not recognize.exists("predictions/b2/submission.csv")
    assert recognize.list("predictions/b2") == ["predictions/b2/report.json"]


def test_a_job_launched_under_its_role_gets_its_roles_keys_only(iam_s3, monkeypatch, tmp_path):
    """Through the launcher (local form): the real ``folds`` job, a training job, gets the
    train role's Airflow connection; it writes its run and is refused outside it."""
    from airflow.sdk.exceptions import AirflowException

    iam_s3["admin"].put_object(Bucket=STORE, Key="datasets/tiny/train.csv", Body=(
        "image_id,labels\n" + "".join(f"{b}_00{i},U+3042 1 1 5 5\n"
                                      for b in "abc" for i in (1, 2))).encode())
    for role in ROLES:  # Airflow connections from the environment, as compose defines them
        key, secret = iam_s3["keys"][role]
        monkeypatch.setenv(f"AIRFLOW_CONN_KZ_S3_{role.upper()}", json.dumps({
            "conn_type": "aws", "login": key, "password": secret,
            "extra": {"endpoint_url": iam_s3["url"], "region_name": "us-east-1"}}))
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)
    cfg = LaunchConfig.model_validate({
        "image": "unused", "env": {"KZ_STORE": f"s3://{STORE}", "KZ_S3_MAX_ATTEMPTS": "1"},
        "role_connections": {r: {f"kz_s3_{r}": "aws"} for r in ROLES}})

    def run(out: str) -> dict:
        op = job("folds", "folds", ["datasets/tiny", "--out", out, "--profile", "tiny"],
                 config=cfg)
        assert op.connections == {"kz_s3_train": "aws"}
        return op.execute({})

    assert run("runs/retrain/r9/folds.json")["out"] == "runs/retrain/r9/folds.json"
    with pytest.raises(AirflowException, match="access denied"):
        run("predictions/r9/folds.json")


def test_every_command_has_a_role_and_every_role_a_policy():
    assert set(JOB_ROLES) == set(JOB_RESOURCES)
    assert role_for("validate batch") == role_for("validate annotations") == "validate"
    assert role_for("recognize merge") == "recognize" and role_for("promote") == "promote"
    with pytest.raises(KeyError, match="JOB_ROLES"):
        role_for("shell")
    assert {p.stem for p in POLICIES.glob("*.json")} == {*ROLES, "mlflow-server"}
    for path in POLICIES.glob("*.json"):
        for st in json.loads(path.read_text())["Statement"]:
            resources = [st["Resource"]] if isinstance(st["Resource"], str) else st["Resource"]
            for arn in resources:  # never a wildcard over every bucket or the whole store
                assert arn.startswith((f"arn:aws:s3:::{STORE}", f"arn:aws:s3:::{REGISTRY}"))
                assert not (st["Effect"] == "Allow" and "s3:PutObject" in st["Action"]
                            and arn in (f"arn:aws:s3:::{STORE}/*",)), (path, arn)
    # The registry is written by register alone (and the MLflow server that serves it).
    writers = {p.stem for p in POLICIES.glob("*.json")
               if any("s3:PutObject" in st["Action"] and st["Effect"] == "Allow"
                      and any(REGISTRY in r for r in st["Resource"])
                      for st in json.loads(p.read_text())["Statement"])}
    assert writers == {"register", "mlflow-server"}
    # The compose stack creates a MinIO user for each of them.
    init = (REPO / "infra" / "compose" / "minio" / "init.sh").read_text()
    for role in ROLES:
        assert f"user kz-{role} {role} " in init


# ---- PostgreSQL: promotion's lock role -----------------------------------------------


@pytest.fixture
def lock_role(pg_uri: str) -> Iterator[tuple[str, str]]:
    """A throwaway database holding MLflow's real tables, and the lock role made there by
    the compose stack's own SQL; (the role's URI, the owner's URI). Both are dropped."""
    import psycopg2
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=pg_uri, registry_uri=pg_uri)  # creates the schema
    client.create_registered_model("kz-recognizer")
    db = pg_uri.rsplit("/", 1)[1]
    role = f"kz_promote_{uuid.uuid4().hex[:8]}"
    admin = PG_ADMIN_URI
    subprocess.run(["psql", admin, "-q", "-v", "ON_ERROR_STOP=1", "-v", f"lock_role={role}",
                    "-v", "lock_pw=p", "-v", f"lock_db={db}", "-f",
                    str(REPO / "infra" / "compose" / "initdb" / "promote-lock.psql")],
                   check=True, capture_output=True)
    host = admin.split("@", 1)[1].rsplit("/", 1)[0]
    try:
        yield f"postgresql+psycopg2://{role}:p@{host}/{db}", pg_uri
    finally:
        conn = psycopg2.connect(admin)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
            cur.execute(f'DROP ROLE IF EXISTS "{role}"')
        conn.close()


def test_the_promotion_lock_works_with_its_own_role_which_cannot_touch_mlflow(
        lock_role, monkeypatch):
    import psycopg2
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import ProgrammingError

    from kzjobs.core.settings import get_settings
    from kzjobs.release.promote import LockTimeout, promotion_lock

    uri, owner = lock_role
    monkeypatch.setenv("KZ_LOCK_URI", uri)
    get_settings.cache_clear()
    with promotion_lock("kz-recognizer", timeout=5) as kind:
        assert kind == "postgresql"
        # Held: a second promotion (another worker) waits, then gives up.
        with pytest.raises(LockTimeout), promotion_lock("kz-recognizer", timeout=0.5,
                                                        poll=0.1):
            pass
    with promotion_lock("kz-recognizer", timeout=5):  # released, so free again
        pass

    engine = create_engine(uri)
    try:
        # Named with their schema: unqualified, they are not even found.
        for sql in ("SELECT name FROM public.registered_models",
                    "UPDATE public.registered_model_aliases SET version = 1",
                    "INSERT INTO public.registered_model_tags VALUES ('k', 'v', 'kz-recognizer')",
                    "CREATE TABLE public.mine (x int)"):
            with engine.connect() as conn, pytest.raises(ProgrammingError) as raised:
                conn.execute(text(sql))
            assert isinstance(raised.value.orig, psycopg2.errors.InsufficientPrivilege), sql
            assert "permission denied" in str(raised.value.orig)
    finally:
        engine.dispose()
    # The owner still reads them: the refusals are the role's.
    owner_engine = create_engine(owner)
    with owner_engine.connect() as conn:
        assert conn.execute(text("SELECT name FROM registered_models")).scalar() == \
            "kz-recognizer"
    owner_engine.dispose()
