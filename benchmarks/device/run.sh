#!/usr/bin/env bash
# On a lent GPU machine (docs/gpu.md): unpack onnxruntime-gpu from .gpu/ (made here by
# pack_onnxruntime_gpu.py), make colbert_onnx importable without installing, then run the CUDA
# tests and benchmarks/bench_gpu.py. Results go to $OUT. Usage: bash benchmarks/device/run.sh [bench args]
set -uo pipefail
OUT=${OUT:-/tmp/bench-gpu-out}
mkdir -p "$OUT"
SITE=/tmp/ortgpu-site PKG=/tmp/colbert-pkg
rm -rf "$SITE" "$PKG" && mkdir -p "$SITE" "$PKG"
python3 - "$SITE" <<'PY' || exit 1
import lzma, shutil, sys, tarfile
site = sys.argv[1]
tarfile.open(".gpu/onnxruntime_py.tar.gz").extractall(site)
binding = open(".gpu/binding_name").read().strip()
for packed, name in (("providers_cuda.so.xz", "libonnxruntime_providers_cuda.so"), ("pybind11_state.so.xz", binding)):
    with lzma.open(f".gpu/{packed}") as src, open(f"{site}/onnxruntime/capi/{name}", "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 24)
PY
cp -r runtime "$PKG/colbert_onnx" && cp -r export "$PKG/colbert_onnx/export" && cp -r server "$PKG/colbert_onnx/server"
export PYTHONPATH="$SITE:$PKG:$PWD"
NVLIBS=$(python3 -c "import glob, site; print(':'.join(sorted({d for s in site.getsitepackages() for d in glob.glob(s + '/nvidia/**/lib', recursive=True)})))")
export LD_LIBRARY_PATH="$NVLIBS:${LD_LIBRARY_PATH:-}"
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import onnxruntime as o; print(o.__version__, o.__file__, o.get_available_providers())" | tee -a "$OUT/gpu.txt"
python3 -m pytest -q -p no:cacheprovider -o addopts="" -rs tests/test_cuda.py tests/test_iobinding.py 2>&1 \
  | tee "$OUT/pytest-cuda.log" | tail -12
PYTHONUNBUFFERED=1 python3 -m benchmarks.bench_gpu --json "$OUT/bench-gpu.json" --models /tmp/models "$@" 2>&1 \
  | grep -v -i warning | tee "$OUT/bench-gpu.log" | cut -c1-400
