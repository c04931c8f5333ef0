# syntax=docker/dockerfile:1
# The Airflow image: Airflow 3.3 with the providers the launcher uses, the DAGs, and
# the light part of kzjobs (the DAGs import no torch, pandas or GX).
# Build from the repository root:
#   docker build -f containers/airflow.Dockerfile -t ghcr.io/kzjobs/kzjobs-airflow:0.1.0 .
# With --build-arg KZ_EXTRAS=jobs the jobs can also run inside Airflow (launcher "local").
ARG AIRFLOW_IMAGE=apache/airflow:3.3.2-python3.11
FROM ${AIRFLOW_IMAGE}

ARG KZ_EXTRAS=""
ENV GX_ANALYTICS_ENABLED=false \
    MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false \
    AIRFLOW__CORE__LOAD_EXAMPLES=false

USER airflow
COPY --chown=airflow:root pyproject.toml README.md /opt/kzjobs-src/
COPY --chown=airflow:root kzjobs /opt/kzjobs-src/kzjobs
# Airflow stays pinned to the image's version while the providers are added.
RUN pip install --no-cache-dir \
      "apache-airflow==${AIRFLOW_VERSION}" \
      "apache-airflow-providers-fab>=3.10" \
      "apache-airflow-providers-docker>=4.0" \
      "apache-airflow-providers-cncf-kubernetes>=10.0" \
      "apache-airflow-providers-celery>=3.10" \
      "celery[redis]>=5.5,<5.7" \
      "asyncpg>=0.30" \
      "/opt/kzjobs-src${KZ_EXTRAS:+[${KZ_EXTRAS}]}"
COPY --chown=airflow:root dags /opt/airflow/dags
