# The README's two commands: `make demo` and `make test`. Each sets up everything it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
FONT_PACKAGES := fonts-kouzan-mouhitsu fonts-aoyagi-kouzan-t fonts-ipaexfont-mincho fonts-hanazono \
	fonts-aoyagi-soseki fonts-kiloji fonts-seto fonts-klee fonts-dejima-mincho \
	fonts-oradano-mincho-gsrr fonts-horai-umefont fonts-sawarabi-mincho
BENCH_PACKAGES := tesseract-ocr tesseract-ocr-jpn tesseract-ocr-jpn-vert
# tests/test_docker_launcher.py runs the compose stack's Docker socket proxy (HAProxy);
# the review pages' tests (and bench.review) open them in headless Chromium.
TEST_PACKAGES := haproxy chromium chromium-driver
LOCKS := locks
# One universal resolution (any platform, Python >= 3.11) from PyPI alone, with every
# file's sha256: the local wheels pip's config points at (torch, torchvision) are the
# same files as PyPI's, so their hashes are in the lock too.
LOCK := $(BIN)/uv pip compile --quiet --no-config --universal --python-version 3.11 \
	--generate-hashes --custom-compile-command 'make lock'
export GX_ANALYTICS_ENABLED := false
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR := false

.PHONY: demo test bench pretrained lint fonts bench-packages test-packages env lock clean

demo: env fonts
	$(BIN)/kzjobs demo

# tests/bench runs the real tesseract binary (bench/tesseract.py), so test installs it too.
test: env fonts bench-packages test-packages
	$(BIN)/ruff check .
	$(BIN)/pytest

bench: env fonts bench-packages test-packages
	$(BIN)/python -m bench.run

lint: env
	$(BIN)/ruff check .

# The demo's shipped starting weights (kzjobs/pretrain/shipped/), rebuilt from this code:
# README, 'Pretrained starting weights'.
pretrained: env fonts
	$(BIN)/kzjobs pretrain --profile demo --out ./kzjobs/pretrain/shipped --no-register --force

env: $(STAMP)

# Everything from the hashed lock (pip refuses a file whose sha256 is not in it), then
# kzjobs itself, editable, without dependencies and built with the locked setuptools.
$(STAMP): pyproject.toml $(LOCKS)/all.txt $(LOCKS)/pip.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q --require-hashes -r $(LOCKS)/pip.txt
	$(BIN)/pip install --disable-pip-version-check -q --require-hashes -r $(LOCKS)/all.txt
	$(BIN)/pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Regenerate the locks after a change to pyproject.toml's dependencies: all.txt (every
# extra: what `make env` installs), then jobs.txt and airflow.txt (the images) and
# pip.txt (the installers), held to all.txt's versions. Pins stay unless pyproject.toml
# needs a change; `make lock UPGRADE=1` moves every pin to the newest release.
lock: env
	$(LOCK) $(if $(UPGRADE),--upgrade) pyproject.toml --all-extras -o $(LOCKS)/all.txt
	$(LOCK) pyproject.toml --extra jobs -c $(LOCKS)/all.txt -o $(LOCKS)/jobs.txt
	$(LOCK) pyproject.toml --extra airflow -c $(LOCKS)/all.txt -o $(LOCKS)/airflow.txt
	$(LOCK) $(LOCKS)/pip.in -c $(LOCKS)/all.txt -o $(LOCKS)/pip.txt

# Debian packages: installed when missing and we are root; otherwise say what to run.
fonts:
	@$(MAKE) --no-print-directory apt-packages PACKAGES="$(FONT_PACKAGES)"

bench-packages:
	@$(MAKE) --no-print-directory apt-packages PACKAGES="$(BENCH_PACKAGES)"

test-packages:
	@$(MAKE) --no-print-directory apt-packages PACKAGES="$(TEST_PACKAGES)"

apt-packages:
	@missing=""; for p in $(PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else \
	    echo "error: missing Debian packages:$$missing" >&2; \
	    echo "run:   sudo apt-get update && sudo apt-get install -y$$missing" >&2; \
	    exit 1; \
	  fi; \
	fi

clean:
	rm -rf var .pytest_cache
