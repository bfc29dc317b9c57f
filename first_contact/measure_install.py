"""Import time and installed size of the runtime alone; run with the runtime-only venv's python.

Prints JSON: the median wall time of a fresh interpreter running ``import colbert_onnx`` and of one
running ``pass`` (timed in turns), the ``-X importtime`` cumulative microseconds of the heaviest
top-level modules, and the bytes of site-packages per installed distribution without .pyc files (CI
installs with --no-compile), split into the runtime's own dependency closure and the rest (pytest).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

from packaging.requirements import Requirement  # a dependency of onnxruntime, so present here

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.conftest import interleaved_medians  # noqa: E402

ROUNDS = 9
# Imports may write .pyc files (the warm-up run does), as after pip's default compile step; CI installs
# with --no-compile and may run with PYTHONDONTWRITEBYTECODE=1, which would time compiling instead.
_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=_ENV)


def import_times() -> dict[str, float]:
    """Median seconds of a fresh `python -c` importing colbert_onnx, only its three dependencies, or nothing
    (timed in turns, so that the differences hold on a loaded machine)."""
    medians = interleaved_medians(
        {"python -c 'import colbert_onnx'": lambda: _python("import colbert_onnx"),
         "python -c 'import numpy, onnxruntime, tokenizers'": lambda: _python("import numpy, onnxruntime, tokenizers"),
         "python -c 'pass'": lambda: _python("pass")},
        rounds=ROUNDS,
    )
    medians["import alone (difference)"] = medians["python -c 'import colbert_onnx'"] - medians["python -c 'pass'"]
    medians["colbert_onnx's own share (difference)"] = (
        medians["python -c 'import colbert_onnx'"] - medians["python -c 'import numpy, onnxruntime, tokenizers'"])
    return {k: round(v, 4) for k, v in medians.items()}


def import_breakdown(top: int = 8) -> dict[str, int]:
    """Cumulative microseconds of the heaviest top-level packages under ``-X importtime`` (one run; nested:
    colbert_onnx includes everything it imports, and each package counts at its first import only)."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", "import colbert_onnx"],
                          capture_output=True, text=True, check=True, env=_ENV)
    cumulative: dict[str, int] = {}
    for line in proc.stderr.splitlines():
        m = re.match(r"import time:\s+\d+ \|\s+(\d+) \|\s*([\w]+)$", line)  # a top-level name: no dot
        if m:
            cumulative[m.group(2)] = max(cumulative.get(m.group(2), 0), int(m.group(1)))
    return dict(sorted(cumulative.items(), key=lambda kv: -kv[1])[:top])


def _closure(name: str) -> set[str]:
    """`name` and every distribution it requires (base install, markers evaluated), normalized names."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        dist = re.sub(r"[-_.]+", "-", todo.pop()).lower()
        if dist in seen:
            continue
        seen.add(dist)
        for spec in importlib.metadata.requires(dist) or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


def _source_bytes(files) -> int:
    """Bytes of the files that are not bytecode caches (.pyc: written by pip's compile step or by imports)."""
    return sum(f.stat().st_size for f in files if f.is_file() and "__pycache__" not in f.parts)


def installed_sizes() -> dict:
    """Bytes per distribution in site-packages (its RECORD's files, .pyc excluded), runtime closure vs the rest."""
    site = Path(sysconfig.get_paths()["purelib"])
    runtime = _closure("colbert-onnx")
    sizes = {}
    for dist in importlib.metadata.distributions(path=[str(site)]):
        name = re.sub(r"[-_.]+", "-", dist.metadata["Name"]).lower()
        sizes[name] = _source_bytes(Path(dist.locate_file(f)) for f in dist.files or [])
    total = _source_bytes(site.rglob("*"))
    closure = {k: v for k, v in sorted(sizes.items(), key=lambda kv: -kv[1]) if k in runtime}
    return {"site_packages_bytes": total, "runtime_closure_bytes": sum(closure.values()), "runtime_closure": closure,
            "other": {k: v for k, v in sorted(sizes.items(), key=lambda kv: -kv[1]) if k not in runtime}}


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            model = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), "")
    except OSError:
        model = ""
    return f"{model or platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"


def main() -> int:
    versions = {n: importlib.metadata.version(n) for n in ("numpy", "onnxruntime", "tokenizers")}
    report = {"python": platform.python_version(), "machine": _cpu(), "versions": versions,
              "import_seconds": import_times(), "importtime_us": import_breakdown(),
              **installed_sizes()}
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
