# Two entry points for a fresh clone: `make serve` and `make test`. Each installs what it needs.
PY ?= python3.11
VENV := .venv
PYTHON := $(VENV)/bin/python
PORT ?= 3000
export BENTOML_DO_NOT_TRACK := true
# One model store under the data folder, for the CLI and `bentoml serve` alike.
export BENTOML_HOME ?= $(or $(VCP_DATA_DIR),$(CURDIR)/data)/bentoml

.PHONY: setup setup-dev demo-data model serve test lint bench train batch loadtest build containerize clean

$(VENV)/.runtime: requirements.txt
	test -x $(PYTHON) || $(PY) -m venv $(VENV)
	$(VENV)/bin/pip install --disable-pip-version-check -q -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt
	$(VENV)/bin/pip install --disable-pip-version-check -q -r requirements-dev.txt
	touch $@

setup: $(VENV)/.runtime

setup-dev: $(VENV)/.dev

demo-data: setup
	$(PYTHON) -m vcp data demo

test: setup-dev
	$(PYTHON) -m pytest

lint: setup-dev
	$(VENV)/bin/ruff check .

train: setup demo-data
	$(PYTHON) -m vcp train

model: setup demo-data
	$(PYTHON) -m vcp train --if-missing

serve: model
	$(VENV)/bin/bentoml serve service:VcpApi --port $(PORT)

# The daily batch on the embedded default store: predictions.db, CSVs and report.
batch: model
	$(PYTHON) -m vcp batch run

bench: setup demo-data
	$(PYTHON) benchmarks/bench_panel.py
	$(PYTHON) benchmarks/bench_features.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
