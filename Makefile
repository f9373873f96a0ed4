# The two commands of the quick start: `make demo` and `make test`.
# Each creates and fills .venv when needed. torch is pinned here only (a local CPU wheel on our
# machines); pyproject.toml declares a range.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_PIN := torch==2.13.0
EXTRAS ?= dev,dmc

.PHONY: demo test lint venv clean bench

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_PIN) numpy
	$(PIP) install -q -e ".[$(EXTRAS)]"
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(VENV)/bin/worldflux demo

lint: venv
	$(PY) -m ruff check src tests benchmarks examples

test: venv lint
	$(PY) -m pytest -q -n 2 --dist loadgroup

bench: venv
	$(PY) -m benchmarks all

clean:
	rm -rf $(VENV) build dist .pytest_cache
