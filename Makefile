# `make test` and `make demo` set up .venv on a fresh machine, then run.
# No CUDA: the CPU torch build (a CUDA build is several GB). DeepSpeed builds against the
# installed torch, so it comes after torch, without build isolation.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
CPU_TORCH := torch==2.13.0 torchvision==0.28.0

.PHONY: install test demo clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet setuptools wheel
	if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
		$(PIP) install --quiet torch torchvision; \
	else \
		$(PIP) install --quiet $(CPU_TORCH); \
	fi
	$(PIP) install --quiet --no-build-isolation "deepspeed>=0.16"
	$(PIP) install --quiet -e ".[test]"
	touch $@

test: install
	$(PY) -m pytest -q -n 2 --durations=15

clean:
	rm -rf $(VENV) build *.egg-info

demo: install
	$(VENV)/bin/gantune demo
