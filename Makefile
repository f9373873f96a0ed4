# The two commands of the quick start: `make demo` and `make test`.
# Each creates and fills .venv when needed. torch is pinned here only (a local CPU wheel on our
# machines); pyproject.toml declares a range.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_PIN := torch==2.13.0
EXTRAS ?= dev,dmc,atari,onnx,hub,wandb,video,play

# Headless MuJoCo rendering (dm_control pixels) uses EGL from Mesa (software, llvmpipe).
export MUJOCO_GL ?= egl

.PHONY: demo test lint venv clean bench system-deps

# Installs Mesa's EGL when it is missing and apt-get is usable (root); otherwise says what to do.
system-deps:
	@if ! ldconfig -p 2>/dev/null | grep -q "libEGL.so.1"; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = "0" ]; then \
	    echo "installing Mesa EGL for headless rendering"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libegl1 libgl1 libegl-mesa0 libgl1-mesa-dri >/dev/null) \
	      || echo "warning: could not install libegl1; pixel observations of MuJoCo tasks will fail"; \
	  else \
	    echo "warning: libEGL not found; install Mesa EGL (Debian: libegl1 libegl-mesa0) for pixel observations"; \
	  fi; \
	fi
	@# Headless chromium + its driver for the browser test of `worldflux play` (tests/play).
	@if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = "0" ]; then \
	    echo "installing chromium and chromium-driver for the browser test"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null) \
	      || echo "warning: could not install chromium; the browser test of worldflux play will be skipped"; \
	  else \
	    echo "warning: chromium/chromedriver not found; the browser test of worldflux play will be skipped (Debian: apt-get install chromium chromium-driver)"; \
	  fi; \
	fi

$(VENV)/.installed: pyproject.toml Makefile | system-deps
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
