"""onnxruntime session creation: providers, threads and load errors turned into typed errors."""

from __future__ import annotations

from dataclasses import dataclass

import onnxruntime as ort

from .errors import DeviceUnavailableError, InvalidInputError, ModelFolderError

DEVICES = ("cpu", "cuda")
OPTIMIZATION_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


@dataclass(frozen=True)
class SessionConfig:
    """onnxruntime session knobs users of long-running encoders ask for (fastembed #483, #570).

    enable_cpu_mem_arena=False trades some speed for memory returned to the OS between calls of
    very different sizes; graph_optimization_level is one of disable|basic|extended|all.
    """

    enable_cpu_mem_arena: bool = True
    enable_mem_pattern: bool = True
    graph_optimization_level: str = "all"


def providers_for(device: str) -> list[str]:
    """Execution providers for `device`; CUDA must really be present in this onnxruntime build."""
    if device not in DEVICES:
        raise DeviceUnavailableError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    if device == "cpu":
        return ["CPUExecutionProvider"]
    available = ort.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        raise DeviceUnavailableError(
            "device='cuda' was requested but this onnxruntime has no CUDAExecutionProvider "
            f"(available: {', '.join(available)}); install colbert-onnx[gpu] (onnxruntime-gpu) "
            "or use device='cpu'"
        )
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


def create_session(
    graph_path: str,
    device: str = "cpu",
    threads: int | None = None,
    config: SessionConfig | None = None,
) -> ort.InferenceSession:
    """An InferenceSession for one graph file; a corrupt or unreadable file names itself."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise InvalidInputError(f"threads must be a positive int or None, got {threads!r}")
    config = config or SessionConfig()
    if config.graph_optimization_level not in OPTIMIZATION_LEVELS:
        raise InvalidInputError(
            f"graph_optimization_level must be one of {', '.join(OPTIMIZATION_LEVELS)}, "
            f"got {config.graph_optimization_level!r}"
        )
    options = ort.SessionOptions()
    options.graph_optimization_level = OPTIMIZATION_LEVELS[config.graph_optimization_level]
    options.enable_cpu_mem_arena = config.enable_cpu_mem_arena
    options.enable_mem_pattern = config.enable_mem_pattern
    options.log_severity_level = 3
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    providers = providers_for(device)
    try:
        return ort.InferenceSession(graph_path, sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises several unrelated exception types on bad files
        raise ModelFolderError(f"cannot load ONNX graph {graph_path}: {str(exc).strip()[:500]}") from exc
