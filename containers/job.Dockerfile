# syntax=docker/dockerfile:1
# The job image: every `kzjobs` job, on a CUDA runtime. Entry point: `kzjobs`.
# Build from the repository root:
#   docker build -f containers/job.Dockerfile -t ghcr.io/kzjobs/kzjobs-job:0.1.0 \
#     --build-arg GIT_COMMIT=$(git rev-parse HEAD) .
# torch 2.14.1's Linux wheels are built for CUDA 13.0; the host needs an NVIDIA driver
# for CUDA 13 and the NVIDIA container toolkit (Docker) or device plugin (Kubernetes).
# The base image pinned by digest (tag 13.0.1-runtime-ubuntu24.04).
ARG CUDA_IMAGE=nvidia/cuda:13.0.1-runtime-ubuntu24.04@sha256:c3fde347d52d578c84fd644bc177bc7ec333feaf11550d990da4084d7612e4c7
FROM ${CUDA_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GX_ANALYTICS_ENABLED=false \
    MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=false

# Python, and the fonts of the synthetic books (kzjobs.synth.fonts, the Makefile's fonts).
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      python3 python3-venv ca-certificates libgomp1 \
      fonts-kouzan-mouhitsu fonts-aoyagi-kouzan-t fonts-ipaexfont-mincho fonts-hanazono \
      fonts-aoyagi-soseki fonts-kiloji fonts-seto fonts-klee fonts-dejima-mincho \
      fonts-oradano-mincho-gsrr fonts-horai-umefont fonts-sawarabi-mincho \
 && rm -rf /var/lib/apt/lists/*

RUN python3 -m venv /opt/kzjobs
ENV PATH=/opt/kzjobs/bin:${PATH}

# Every dependency from the hashed lock (locks/jobs.txt, `make lock`), pip first: pip
# refuses a file whose sha256 is not in the lock. The lock is universal (Python >= 3.11),
# so it also serves this image's Python 3.12. Then kzjobs itself, built with the
# locked setuptools (no unpinned build environment).
WORKDIR /src
COPY locks/pip.txt locks/jobs.txt ./locks/
RUN pip install --require-hashes -r locks/pip.txt \
 && pip install --require-hashes -r locks/jobs.txt
COPY pyproject.toml README.md ./
COPY kzjobs ./kzjobs
RUN pip install --no-deps --no-build-isolation . && rm -rf /src

# A non-root user; its home holds the embedded defaults (KZ_HOME) when nothing is mounted.
# Its uid and gid are the launcher's JOB_UID (kzjobs/orchestrate/launch.py): pods and containers run
# as 10001:10001 explicitly.
RUN groupadd --gid 10001 kz \
 && useradd --create-home --uid 10001 --gid 10001 --shell /usr/sbin/nologin kz
USER 10001
WORKDIR /home/kz
ARG GIT_COMMIT=unknown
ENV KZ_HOME=/home/kz/var \
    KZ_GIT_COMMIT=${GIT_COMMIT}

ENTRYPOINT ["kzjobs"]
CMD ["--help"]
