# igd-gateway developer and CI entry points. `make test` is what .ci/run runs.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := test
# Steps run in the order written, also under `make -j`.
.NOTPARALLEL:

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Written after a successful `pip install -e .[test]`; older than pyproject.toml means reinstall.
INSTALL_STAMP := $(VENV)/.igd-installed

# Debian packages the tests drive (netns suite: ip, nft, upnpc, natpmpc). Installed only as root.
DEB_PACKAGES := iproute2 nftables miniupnpc natpmpc chromium

# Checked code. Only folders that exist (git keeps no empty ones) are passed to ruff, and only those
# holding Python files to mypy, which rejects a folder without any.
PY_PATHS = $(wildcard igd tests bench)
MYPY_PATHS = $(foreach d,$(PY_PATHS),$(if $(shell find $(d) -name '*.py' -print -quit),$(d)))

export PIP_DISABLE_PIP_VERSION_CHECK := 1
export PIP_NO_INPUT := 1

.PHONY: test lint fmt bench run clean install deb-packages

## test: lint, then the test suite under branch coverage; natcore must stay >= 90 % covered.
# coverage run exits with pytest's code, so "no tests collected" (5) fails the target like any error.
test: install deb-packages lint
	$(BIN)/coverage run -m pytest -q
	$(BIN)/coverage report
	$(BIN)/coverage report --include='igd/natcore/*' --fail-under=90

## lint: ruff (lint + format check), mypy --strict, import-linter contracts.
lint: install
	$(BIN)/ruff check $(PY_PATHS)
	$(BIN)/ruff format --check $(PY_PATHS)
	$(BIN)/mypy $(MYPY_PATHS)
	$(BIN)/lint-imports

## fmt: apply ruff's safe fixes, then format.
fmt: install
	$(BIN)/ruff check --fix-only $(PY_PATHS)
	$(BIN)/ruff format $(PY_PATHS)

## bench: run the natcore benchmark (prints figures; never a pass/fail test).
bench: install
	$(BIN)/python bench/natcore.py

## run: `igd serve` on loopback only (no root, no real network touched), state in ./state.
# It prints the description URLs and how to try them (`upnpc -u URL -l`); Ctrl-C stops it.
# Mappings forward on 127.0.0.1 through the userspace relay; NAT-PMP/PCP answer on 127.0.0.1:5351,
# the status page is at /status/ on the HTTP port, `igd status` reads ./state/igd.sock.
# NAT-PMP/PCP need an external address: make run RUN_FLAGS="--external-ip 198.19.0.1 --allow-private-external"
RUN_FLAGS ?=
run: install
	$(BIN)/igd serve --lan lo --state-dir state $(RUN_FLAGS)

## clean: remove caches and coverage data (keeps .venv).
clean:
	rm -rf .mypy_cache .ruff_cache .pytest_cache .hypothesis .import_linter_cache \
		.coverage .coverage.* htmlcov build dist *.egg-info
	find $(PY_PATHS) -name __pycache__ -type d -prune -exec rm -rf {} +

install: $(INSTALL_STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); echo "make: '$(PYTHON) -m venv' failed (on Debian: apt-get install python3-venv)" >&2; exit 1; }

$(INSTALL_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

# As root: install whatever of DEB_PACKAGES is missing (apt-get update only then). Otherwise: report.
deb-packages:
	@missing=""; \
	for p in $(DEB_PACKAGES); do \
		dpkg-query -W -f='$${Status}' "$$p" 2>/dev/null | grep -q 'install ok installed' \
			|| missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then \
		echo "make: not root or no apt-get; missing Debian packages:$$missing (their tests will skip)" >&2; \
		exit 0; \
	fi; \
	echo "make: installing Debian packages:$$missing"; \
	export DEBIAN_FRONTEND=noninteractive; \
	apt-get update -q; \
	apt-get install -y -q --no-install-recommends $$missing
