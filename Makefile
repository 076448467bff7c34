# The README's two commands: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# On these machines `pip install torch==2.13.0` takes a local CPU wheel. Elsewhere, set
# TORCH_SPEC (and, for a CPU-only build, PIP_INDEX_URL to PyTorch's CPU wheel index).
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=
# Two workers, a file each at a time (module fixtures stay in one process): most tests wait
# on real processes and sockets, so two halve the suite's time on 2 cores (19 -> 10 min).
PYTEST_WORKERS ?= 2

.PHONY: demo test lint typecheck pytest browser system-packages bench-packages clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# The demo trains the example with PyTorch, so it installs the torch extra too, and the
# browser extra (Playwright, driving Debian's chromium) for the control scene's screenshot.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[torch,browser]"
	touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/pip install --quiet -e ".[dev,torch]"
	touch $(VENV)/.installed $@

demo: $(VENV)/.installed browser
	$(BIN)/bastion demo

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy src

# The map's HTML is laid out by Graphviz's dot and checked in a real headless Chromium.
# Where we are root with apt (CI, these machines) both are installed once; elsewhere the
# page falls back to a simpler layout and the browser tests say why they skipped.
browser:
	@missing=""; command -v chromium >/dev/null 2>&1 || missing=" chromium"; \
	command -v dot >/dev/null 2>&1 || missing="$$missing graphviz"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing$$missing for the map's page and its browser test (Debian packages)"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
	      || echo "could not install$$missing; the browser tests will skip"; \
	  else echo "not found:$$missing; the browser tests will skip (install Debian's$$missing)"; fi; fi

# The PostgreSQL event log's tests start a real server (tests/pg_server.py): Debian's
# postgresql package, installed here like chromium. Without it those tests fail, saying so
# (BASTION_SKIP_PG=1 makes them skip instead).
system-packages: browser
	@if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing postgresql for the event log's tests (Debian package)"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
	      || echo "could not install postgresql; its tests will fail (BASTION_SKIP_PG=1 skips them)"; \
	  else echo "not found: postgresql; its tests will fail (install Debian's postgresql, or BASTION_SKIP_PG=1)"; fi; fi

# The benchmarks' baselines that are Debian packages: restic (benchmarks/vault.py,
# segments.py, scale_s3.py) and wrk (gateway.py). Not needed by the tests; run
# `make bench-packages` once before the benchmarks, which otherwise print "not installed".
bench-packages: $(VENV)/.installed-dev
	@missing=""; for tool in restic wrk; do command -v $$tool >/dev/null 2>&1 || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing the benchmarks' baselines:$$missing (Debian packages)"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
	      || echo "could not install$$missing; those baselines print no figure"; \
	  else echo "not found:$$missing; install Debian's$$missing for those baselines"; fi; fi

pytest: $(VENV)/.installed-dev system-packages
	$(BIN)/python -m pytest -W error -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test: lint typecheck pytest

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
