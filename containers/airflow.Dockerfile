# syntax=docker/dockerfile:1
# The Airflow image: Airflow 3.3 with the providers the launcher uses, the DAGs, and
# the light part of kzjobs (the DAGs import no torch, pandas or GX).
# Build from the repository root:
#   docker build -f containers/airflow.Dockerfile -t ghcr.io/kzjobs/kzjobs-airflow:0.1.0 .
# With --build-arg KZ_LOCK=all the jobs can also run inside Airflow (launcher "local").
#
# The base is pinned by digest. TODO: its digest could not be looked up where this was
# written; the build refuses to start without it:
#   docker buildx imagetools inspect apache/airflow:slim-3.3.2-python3.11   # "Digest:"
#   docker build --build-arg AIRFLOW_DIGEST=sha256:... -f containers/airflow.Dockerfile ...
# then write it here as the default.
ARG AIRFLOW_IMAGE=apache/airflow:slim-3.3.2-python3.11
ARG AIRFLOW_DIGEST
FROM ${AIRFLOW_IMAGE}@${AIRFLOW_DIGEST}

ARG KZ_LOCK=airflow
ENV GX_ANALYTICS_ENABLED=false \
    MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false \
    AIRFLOW__CORE__LOAD_EXAMPLES=false

USER airflow
# The providers and everything else from the hashed lock (locks/airflow.txt, `make lock`)
# rather than Airflow's constraints file: the lock carries a sha256 for every file, and
# it holds the versions the tests ran with, Airflow's own (the base image's) included.
# The slim base has the fewest packages of its own to disagree with it.
COPY --chown=airflow:root locks/pip.txt locks/${KZ_LOCK}.txt /opt/kzjobs-src/locks/
RUN pip install --no-cache-dir --require-hashes -r /opt/kzjobs-src/locks/pip.txt \
 && pip install --no-cache-dir --require-hashes -r /opt/kzjobs-src/locks/${KZ_LOCK}.txt
COPY --chown=airflow:root pyproject.toml README.md /opt/kzjobs-src/
COPY --chown=airflow:root kzjobs /opt/kzjobs-src/kzjobs
RUN pip install --no-cache-dir --no-deps --no-build-isolation /opt/kzjobs-src
COPY --chown=airflow:root dags /opt/airflow/dags
