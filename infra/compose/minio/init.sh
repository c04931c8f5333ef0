#!/bin/sh
# MinIO's buckets, and one user per job role with its policy (infra/policies/<role>.json,
# mounted at /policies): a job gets its role's keys only (kzjobs.orchestrate.launch.JOB_ROLES), so
# validation cannot touch models, training cannot touch predictions, and only register
# and promote reach the registry. The secret keys come from .env; re-running is harmless
# (users are updated, policies replaced).
set -eu
mc alias set kz http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD"
mc mb --ignore-existing kz/kz-store kz/kz-mlflow

user() {  # user name, policy file name, secret key
  mc admin user add kz "$1" "$3"
  mc admin policy create kz "$1" "/policies/$2.json"
  # mc refuses to attach a policy twice: a restart detaches it first (which fails, and
  # is ignored, on the first run), so that the attach itself never fails silently.
  mc admin policy detach kz "$1" --user "$1" >/dev/null 2>&1 || :
  mc admin policy attach kz "$1" --user "$1"
}
user kz-validate validate "$KZ_S3_VALIDATE_SECRET"
user kz-train train "$KZ_S3_TRAIN_SECRET"
user kz-recognize recognize "$KZ_S3_RECOGNIZE_SECRET"
user kz-register register "$KZ_S3_REGISTER_SECRET"
user kz-promote promote "$KZ_S3_PROMOTE_SECRET"
user "$KZ_S3_MLFLOW_USER" mlflow-server "$KZ_S3_MLFLOW_SECRET"
