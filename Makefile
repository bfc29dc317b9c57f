# colbert-onnx: `make demo` sets everything up and runs the main job; `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
MODEL ?=
OUT ?= models/jina-colbert-v2-onnx
SOURCES ?= jinaai/jina-colbert-v2 jinaai/jina-colbert-v2-96 jinaai/jina-colbert-v2-64

.PHONY: setup demo test test-slow export lint

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[export,dev]"
	touch $@

demo: setup
	$(PY) -m colbert_onnx.export.demo $(if $(MODEL),--model $(MODEL))

test: setup
	$(PY) -m pytest -q

test-slow: setup
	$(PY) -m pytest -q -m slow

export: setup
	$(VENV)/bin/colbert-onnx export $(if $(MODEL),$(MODEL),$(SOURCES)) --out $(OUT)

lint: setup
	$(VENV)/bin/ruff check .
