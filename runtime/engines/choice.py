"""engine="auto": which engine runs on this CPU, by a rule that names the CPU features it reads.

:func:`choose_engine` is a pure function of a CPU's feature flags (as /proc/cpuinfo names them), the precision
asked for and which engines the model folder allows (a graph that passed that precision's fidelity gates, the
package installed), so that the rule is tested on every CPU class without owning one. The rule and the figures
behind it: docs/engines.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

# bf16 dot-product units OpenVINO's bf16 inference runs on (Intel AMX-BF16; AVX512-BF16 on Cooper Lake, Zen 4/5)
BF16_FEATURES = ("amx_bf16", "avx512_bf16")
# int8 dot-product units on which OpenVINO's int8 (NNCF) measured faster than onnxruntime's: AMX-INT8 (issue 25: NNCF
# int8 2.9x our onnxruntime int8 at 16 x 256 on a Sapphire Rapids class Xeon) and AVX512-VNNI (docs/engines.md:
# 1.40x at 16 x 256 and 1.36x at 2048 tokens on AMD Zen 4, 4 x 1024). Not AVX-VNNI (256-bit, client CPUs) or plain
# AVX2: not measured faster (NNCF int8 ran 0.54x-0.62x onnxruntime's int8 at 16 x 256 on a Zen 3, small and wide),
# and there OpenVINO's CPU plugin does not fuse its int8 attention (17 GB for one 8192-token document): onnxruntime
# stays.
INT8_FEATURES = ("amx_int8", "avx512_vnni")
# int8 dot products that sum u8 x s8 in int32 without saturating (where an int8 graph's figures carry over)
EXACT_INT8_FEATURES = ("amx_int8", "avx512_vnni", "avx_vnni")
# Every flag the rule and its log line read (Linux /proc/cpuinfo names), strongest first.
READ_FEATURES = ("amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni", "avx_vnni", "avx512f", "avx2")


@dataclass(frozen=True)
class EngineChoice:
    """The engine picked and why, in words a log line and describe() can show."""

    engine: str
    reason: str


def cpu_features(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """The feature flags of this CPU (the first processor's `flags` line); empty where unreadable (not Linux)."""
    try:
        text = Path(cpuinfo).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def named_features(features: Iterable[str]) -> list[str]:
    """The flags among those the rule reads, in the rule's order."""
    have = set(features)
    return [f for f in READ_FEATURES if f in have]


def choose_engine(features: Iterable[str], precision: str, refusal: Callable[[str], str | None]) -> EngineChoice:
    """The engine for a CPU with `features` at `precision`; `refusal(engine)` says why an engine cannot run here
    (None: it can), asked only for an engine the rule would pick (so openvino is not imported for nothing).

    Rule (docs/engines.md):
    - int8 on a CPU with amx_int8 or avx512_vnni: OpenVINO's int8 graph (NNCF), when it passed the int8 gates. It ran
      1.36x-1.40x onnxruntime's int8 on AVX512-VNNI (Zen 4, 4 x 1024) and NNCF int8 2.9x it on an AMX Xeon (issue 25).
    - fp16 on a CPU with bf16 units (amx_bf16 or avx512_bf16): OpenVINO at bf16 inference precision, when its graph
      passed the fp16 gates. onnxruntime has no bf16 or fp16 GEMM on x86 CPUs; OpenVINO's bf16 ran 2.3x our int8
      on an AMX Xeon (issue 25) and 1.1x-1.9x it on AVX512-BF16 (docs/runs/2026-12-06-engines.md).
    - everything else: onnxruntime. fp32: OpenVINO's f32 was 0.8x-1.1x onnxruntime's on AVX-512 and neither has an
      AMX fp32 path; int8 without those units: not measured faster.
    """
    have = set(features)
    shown = ", ".join(named_features(have)) or "none of the flags the rule reads"
    units = {"int8": [f for f in INT8_FEATURES if f in have], "fp16": [f for f in BF16_FEATURES if f in have]}
    why_openvino = {"int8": "OpenVINO's int8 graph passed the int8 gates and ran faster than onnxruntime's int8 "
                            "on these units",
                    "fp16": "OpenVINO's bf16 graph passed the fp16 gates and onnxruntime has no bf16 or fp16 GEMM "
                            "on x86"}
    if precision not in units:
        return EngineChoice("onnxruntime", f"{precision}: onnxruntime is the faster faithful engine on every CPU "
                                           f"measured (CPU: {shown})")
    if not units[precision]:
        kind = "int8 dot-product units (amx_int8, avx512_vnni)" if precision == "int8" else "bf16 units"
        return EngineChoice("onnxruntime", f"{precision} on a CPU without {kind} (CPU: {shown})")
    named = ", ".join(units[precision])
    refused = refusal("openvino")
    if refused is None:
        return EngineChoice("openvino", f"{precision} on a CPU with {named}: {why_openvino[precision]}")
    return EngineChoice("onnxruntime", f"{precision} on a CPU with {named}, but OpenVINO cannot run: {refused}")
