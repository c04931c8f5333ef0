# The README's two commands: `make demo` and `make test`. Each sets up everything it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
FONT_PACKAGES := fonts-kouzan-mouhitsu fonts-aoyagi-kouzan-t fonts-ipaexfont-mincho fonts-hanazono \
	fonts-aoyagi-soseki fonts-kiloji fonts-seto fonts-klee fonts-dejima-mincho \
	fonts-oradano-mincho-gsrr fonts-horai-umefont fonts-sawarabi-mincho
BENCH_PACKAGES := tesseract-ocr tesseract-ocr-jpn tesseract-ocr-jpn-vert
# The review pages' tests open them in headless Chromium through its WebDriver.
BROWSER_PACKAGES := chromium chromium-driver
export GX_ANALYTICS_ENABLED := false
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR := false

.PHONY: demo test bench lint fonts bench-packages browser-packages env clean

demo: env fonts
	$(BIN)/kzjobs demo

# tests/bench runs the real tesseract binary (bench/tesseract.py), so test installs it too;
# tests/recognize/test_review_browser.py runs Chromium.
test: env fonts bench-packages browser-packages
	$(BIN)/ruff check .
	$(BIN)/pytest

bench: env fonts bench-packages browser-packages
	$(BIN)/python -m bench.run

lint: env
	$(BIN)/ruff check .

env: $(STAMP)

# torch/torchvision are pinned to the wheels on local disk; the rest comes from PyPI.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --disable-pip-version-check -q -e '.[jobs,airflow,dev]'
	touch $(STAMP)

# Debian packages: installed when missing and we are root; otherwise say what to run.
fonts:
	@$(MAKE) --no-print-directory apt-packages PACKAGES="$(FONT_PACKAGES)"

bench-packages:
	@$(MAKE) --no-print-directory apt-packages PACKAGES="$(BENCH_PACKAGES)"

browser-packages:
	@$(MAKE) --no-print-directory apt-packages PACKAGES="$(BROWSER_PACKAGES)"

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
