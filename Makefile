# Two entry points for a new machine:  `make demo` (install, then run the pipeline end to end on CPU)
# and `make test` (install, then run the test suite). Both are safe to re-run: installs are skipped when done,
# and the demo replaces the folder its previous run wrote (runs/demo).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Debian packages: speech engines for the synthetic corpus and evaluation tests, Chromium for the web UI test.
APT_PACKAGES := espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts fortunes bible-kjv \
	bible-kjv-text sox chromium chromium-driver

.PHONY: setup system-deps demo test test-quick lint clean distclean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	# torch first, pinned: on a CPU machine this takes the CPU build; a looser spec would pull GBs of CUDA wheels.
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -e ".[dev,eval]"
	# resemblyzer's metadata asks for webrtcvad, which only builds from source; the eval extra brings
	# webrtcvad-wheels and resemblyzer's other dependencies, so resemblyzer itself goes in without its own.
	$(BIN)/pip install --no-deps "resemblyzer>=0.1.4"
	touch $@

setup: $(VENV)/.installed

$(VENV)/.system-deps:
	$(SUDO) apt-get update
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $(APT_PACKAGES)
	mkdir -p $(VENV) && touch $@

system-deps: $(VENV)/.system-deps

demo: setup
	$(BIN)/gsv demo --out runs/demo --overwrite

test: setup system-deps
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

# The quick loop while editing: everything but the end-to-end tests marked `slow` (`make test` runs those too).
test-quick: setup system-deps
	$(BIN)/python -m pytest -q -m "not slow"

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy

# `clean` removes what the demo and the tests wrote; `distclean` also removes the virtual environment.
clean:
	rm -rf runs .pytest_cache

distclean: clean
	rm -rf $(VENV)
