# dinogeo: two commands on a fresh machine.
#   make demo   set up .venv and run the end-to-end demo on real sample imagery
#   make test   set up .venv and run ruff, mypy and the test suite
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
# python3.12 may be a pyenv shim that fails without a selected version: fall back to pyenv's install.
PYTHON312 ?= $(shell (python3.12 -c 'import sys' >/dev/null 2>&1 && command -v python3.12) || ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.12*/bin/python3.12 2>/dev/null | tail -n 1)

.PHONY: venv test lint typecheck pytest demo bench clean qgis-plugin

$(VENV)/.installed: pyproject.toml
	@test -n "$(PYTHON312)" || { echo "python3.12 not found: install Python 3.12 or set PYTHON312=/path/to/python3.12"; exit 1; }
	test -x $(PY) || $(PYTHON312) -m venv $(VENV)
	$(PY) -m pip install --upgrade -q pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

venv: $(VENV)/.installed

lint: venv
	$(VENV)/bin/ruff check dinogeo tests bench
	$(VENV)/bin/ruff format --check dinogeo
	$(VENV)/bin/ruff check qgis_plugin
	$(VENV)/bin/ruff format --check qgis_plugin

typecheck: venv
	$(VENV)/bin/mypy

pytest: venv
	$(VENV)/bin/pytest -q -x --timeout=600 tests

test: lint typecheck pytest

demo: venv
	$(VENV)/bin/dinogeo demo

bench: venv
	$(PY) bench/loader.py
	$(PY) bench/pretrain_step.py
	$(PY) bench/predict.py

# the installable QGIS plugin zip (Plugins > Manage and Install Plugins > Install from ZIP)
qgis-plugin:
	python3 qgis_plugin/build_zip.py -o dist

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
