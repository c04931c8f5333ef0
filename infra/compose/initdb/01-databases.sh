#!/bin/sh
# Runs once, on an empty data folder: a database and a role each for Airflow and MLflow,
# and MLflow's users (its basic-auth app, ../mlflow-auth.ini).
# The passwords come from the container's environment (compose's .env), not from here.
set -eu
psql -v ON_ERROR_STOP=1 --username postgres \
  -v airflow_pw="$AIRFLOW_DB_PASSWORD" -v mlflow_pw="$MLFLOW_DB_PASSWORD" <<'SQL'
CREATE ROLE airflow LOGIN PASSWORD :'airflow_pw';
CREATE DATABASE airflow OWNER airflow;
CREATE ROLE mlflow LOGIN PASSWORD :'mlflow_pw';
CREATE DATABASE mlflow OWNER mlflow;
CREATE DATABASE mlflow_auth OWNER mlflow;
SQL
