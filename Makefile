# Quick start: `make demo` (main job, CPU, no downloads) and `make test` (the whole suite).
# Both install what they need into .venv first (torch comes from this machine's local wheel store).
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1

.PHONY: demo test test-hosts lint setup setup-host mutants

$(VENV)/.core: requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

$(VENV)/.host: $(VENV)/.core scripts/setup_comfy_host.sh
	bash scripts/setup_comfy_host.sh
	touch $@

setup: $(VENV)/.core
setup-host: $(VENV)/.host

demo: $(VENV)/.core
	$(PY) -m tav demo

test: $(VENV)/.host
	$(PY) -m pytest tests

# The e2e suite on each ComfyUI host given: make test-hosts HOSTS="path/to/comfy-0.33=path/to/python ..."
test-hosts: $(VENV)/.host
	bash scripts/test_hosts.sh $(HOSTS)

# Mutation testing, not part of `make test` (docs/testing.md): every core module against its own unit tests,
# or one: make mutants MODULE=windows. Results stay in build/mutants/<module>/ (mutmut results, mutmut show).
mutants: $(VENV)/.core
	$(PY) scripts/mutants.py $(MODULE)

lint: $(VENV)/.core
	$(VENV)/bin/ruff check .
