"""Which CPU a benchmark ran on, in the words its figures depend on (int8 speed hinges on VNNI/AMX)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

# The instruction sets that change which onnxruntime / OpenVINO kernels run, in /proc/cpuinfo's names.
FEATURES = {"avx2": "AVX2", "avx512f": "AVX-512", "avx512_vnni": "AVX512-VNNI", "avx_vnni": "AVX-VNNI",
            "avx512_bf16": "AVX512-bf16", "amx_int8": "AMX-int8"}


def describe(cpuinfo: str | None = None) -> str:
    """'<model name>, N cores, AVX2, no VNNI' from /proc/cpuinfo, or the platform's name where there is none."""
    if cpuinfo is None:
        path = Path("/proc/cpuinfo")
        cpuinfo = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
    fields = dict(line.split(":", 1) for line in cpuinfo.splitlines() if ":" in line)
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    name = fields.get("model name") or platform.processor() or platform.machine()
    parts = [name, f"{os.cpu_count()} cores"]
    if "flags" in fields:
        flags = set(fields["flags"].split())
        parts += [label for flag, label in FEATURES.items() if flag in flags]
        if not flags & {"avx512_vnni", "avx_vnni", "amx_int8"}:
            parts.append("no VNNI")
    return ", ".join(parts)
