#!/bin/sh
# Runs once, on an empty data folder, after 01-databases.sh: the promotion lock's role,
# kz_promote, which may hold an advisory lock in MLflow's database and touch nothing else
# (promote-lock.psql). Its password comes from the container's environment (.env).
set -eu
psql -v ON_ERROR_STOP=1 --username postgres -v lock_role=kz_promote \
  -v lock_pw="$KZ_PROMOTE_DB_PASSWORD" -v lock_db=mlflow \
  -f /docker-entrypoint-initdb.d/promote-lock.psql
