"""engine="auto": which engine runs on this CPU, by a rule that names the CPU features it reads.

:func:`choose_engine` is a pure function of a CPU's feature flags (as /proc/cpuinfo names them) and of which
engines the model folder allows (a graph that passed the fidelity gates, the package installed), so that the
rule is tested on every CPU class without owning one. The rule and the figures behind it: docs/engines.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

# The flags the rule reads (Linux /proc/cpuinfo names), strongest first.
AMX_FEATURES = ("amx_bf16", "amx_int8", "amx_tile")
READ_FEATURES = (*AMX_FEATURES, "avx512_bf16", "avx512_vnni", "avx_vnni", "avx512f", "avx2")


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


def choose_engine(features: Iterable[str], refusals: Mapping[str, str | None]) -> EngineChoice:
    """The engine for a CPU with `features`, among those `refusals` allows (engine -> None, or why it cannot run).

    Rule (docs/engines.md): OpenVINO where the CPU has AMX (amx_bf16 or amx_int8) and the folder holds an
    OpenVINO graph that passed the gates; onnxruntime everywhere else: on AVX-512 VNNI/BF16 without AMX and
    on AVX2, onnxruntime was as fast or faster on the measured graphs (docs/runs/2026-12-06-engines.md).
    """
    have = set(features)
    amx = [f for f in AMX_FEATURES[:2] if f in have]
    openvino_refused = refusals.get("openvino", "not considered")
    if amx and openvino_refused is None:
        return EngineChoice("openvino", f"CPU has {', '.join(amx)}: OpenVINO's graph passed the gates and is "
                                        "the faster engine on AMX CPUs")
    if amx:
        return EngineChoice("onnxruntime", f"CPU has {', '.join(amx)}, but OpenVINO cannot run: {openvino_refused}")
    shown = ", ".join(named_features(have)) or "no AMX, VNNI or AVX-512 flags"
    return EngineChoice("onnxruntime", f"CPU without AMX ({shown}): onnxruntime is as fast or faster here")
