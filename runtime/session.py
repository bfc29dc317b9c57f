"""onnxruntime session creation: providers, threads and load errors turned into typed errors."""

from __future__ import annotations

import onnxruntime as ort

from .errors import DeviceUnavailableError, ModelFolderError

DEVICES = ("cpu", "cuda")


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
    graph_optimization_level: ort.GraphOptimizationLevel = ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    enable_cpu_mem_arena: bool = True,
) -> ort.InferenceSession:
    """An InferenceSession for one graph file; a corrupt or unreadable file names itself."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"threads must be a positive int or None, got {threads!r}")
    options = ort.SessionOptions()
    options.graph_optimization_level = graph_optimization_level
    options.enable_cpu_mem_arena = enable_cpu_mem_arena
    options.log_severity_level = 3
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    providers = providers_for(device)
    try:
        return ort.InferenceSession(graph_path, sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises several unrelated exception types on bad files
        raise ModelFolderError(f"cannot load ONNX graph {graph_path}: {str(exc).strip()[:500]}") from exc
