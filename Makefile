# Two entry points for a fresh clone: `make serve` and `make test`. Each installs what it needs.
PY ?= python3.11
VENV := .venv
PYTHON := $(VENV)/bin/python
PORT ?= 3000
export BENTOML_DO_NOT_TRACK := true
# One model store under the data folder, for the CLI and `bentoml serve` alike.
export BENTOML_HOME ?= $(or $(VCP_DATA_DIR),$(CURDIR)/data)/bentoml

.PHONY: setup setup-dev browser demo-data model serve test lint bench train batch loadtest fuzz fuzz-full build containerize clean

$(VENV)/.runtime: requirements.txt
	test -x $(PYTHON) || $(PY) -m venv $(VENV)
	$(VENV)/bin/pip install --disable-pip-version-check -q -r requirements.txt
	touch $@

$(VENV)/.dev: $(VENV)/.runtime requirements-dev.txt requirements-fixtures.txt
	$(VENV)/bin/pip install --disable-pip-version-check -q -r requirements-dev.txt
	$(VENV)/bin/pip install --disable-pip-version-check -q --no-deps -r requirements-fixtures.txt
	touch $@

setup: $(VENV)/.runtime

setup-dev: $(VENV)/.dev

demo-data: setup
	$(PYTHON) -m vcp data demo

# Headless Chromium for tests/test_browser.py: Debian's package (a test tool's own browser
# download cannot work here). Playwright drives it over CDP, so no chromedriver is needed.
browser:
	@command -v chromium >/dev/null || { apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

test: setup-dev browser
	$(PYTHON) -m pytest

# Style and types of the project's packages (mypy's files and exceptions: pyproject.toml).
lint: setup-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

train: setup demo-data
	$(PYTHON) -m vcp train

model: setup demo-data
	$(PYTHON) -m vcp train --if-missing

serve: model
	$(VENV)/bin/bentoml serve service:VcpApi --port $(PORT)

# The daily batch on the embedded default store: predictions.db, CSVs and report.
batch: model
	$(PYTHON) -m vcp batch run

# A Bento (service code, requirements, the ACTIVE vcp_breakout model, generated Dockerfile) in
# $(BENTOML_HOME)/bentos/vcp_api/: bentofile.yaml with `vcp_breakout:latest` pinned to the
# active version (the newest when none was promoted).
build: model
	@ACTIVE=$$($(PYTHON) -c "from training_artifacts.model_store import active_or_latest; \
	print(active_or_latest().tag)") && echo "packing model $$ACTIVE" && \
	SPEC=$$(mktemp --suffix=.yaml) && sed "s|vcp_breakout:latest|$$ACTIVE|" bentofile.yaml > $$SPEC && \
	$(VENV)/bin/bentoml build -f $$SPEC . ; STATUS=$$?; rm -f $$SPEC; exit $$STATUS

# Docker image vcp_api:latest from the newest Bento (needs a Docker engine, or
# BENTOML_CONTAINERIZE_BACKEND / --backend for buildah, podman, buildctl...).
containerize: build
	$(VENV)/bin/bentoml containerize vcp_api:latest -t vcp_api:latest

# Locust, headless, against a server it starts on the demo store and model: fails when predict's
# p95 exceeds LOADTEST_MAX_P95_MS (50) or any request fails. Results in loadtests/results/.
loadtest: setup-dev model
	$(PYTHON) loadtests/run.py

# Schemathesis against a running server's own spec, every check: `make serve` in another
# shell, then `make fuzz` (URL=http://localhost:3000; KEY=... when VCP_API_KEYS are set, an
# admin key to reach every route). tests/test_fuzz.py runs the same in CI (50 cases per
# operation); `make fuzz-full` runs it with 200 on its own server.
URL ?= http://localhost:$(PORT)
KEY ?=
fuzz: setup-dev
	$(VENV)/bin/schemathesis --config-file tests/schemathesis.toml run $(URL)/openapi.json \
	  --url $(URL) --max-examples 200 --checks all --generation-database none \
	  $(if $(KEY),--header "X-API-Key: $(KEY)")

fuzz-full: setup-dev
	FUZZ_EXAMPLES=200 $(PYTHON) -m pytest -s tests/test_fuzz.py

bench: model
	-command -v wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk) >/dev/null 2>&1
	$(PYTHON) benchmarks/bench_panel.py --build
	$(PYTHON) benchmarks/bench_features.py
	$(PYTHON) benchmarks/bench_batch.py
	$(PYTHON) benchmarks/bench_service.py
	$(PYTHON) benchmarks/bench_charts.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
