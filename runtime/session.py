"""onnxruntime session creation: providers, threads and load errors turned into typed errors;
runs through IOBinding on whatever device the session's provider is."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from .errors import DeviceUnavailableError, ModelFolderError
from .float_environment import kept
from .options import boolean, check_options, option, optional_positive_int, parse_bool, parse_optional_int, parse_str

DEVICES = ("cpu", "cuda")
OPTIMIZATION_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


ARENA_EXTEND_STRATEGIES = ("kNextPowerOfTwo", "kSameAsRequested")
DENORMAL_AS_ZERO = "session.set_denormal_as_zero"  # onnxruntime's session config key


@dataclass(frozen=True)
class SessionConfig:
    """onnxruntime session knobs users of long-running encoders ask for (fastembed #483, #570).

    enable_cpu_mem_arena=False trades some speed for memory returned to the OS between calls of
    very different sizes; graph_optimization_level is one of disable|basic|extended|all. Validated on
    construction, on every device: a typo must not wait for a GPU.
    """

    enable_cpu_mem_arena: bool = option(True, "onnxruntime's CPU memory arena (off: memory goes back to the OS "
                                              "between calls, a little slower)", parse_bool, check=boolean)
    enable_mem_pattern: bool = option(True, "onnxruntime's memory pattern planning", parse_bool, check=boolean)
    graph_optimization_level: str = option("all", "onnxruntime graph optimizations", parse_str,
                                           choices=tuple(OPTIMIZATION_LEVELS))
    # CUDA only: cap on the session's GPU arena in bytes (None: no cap), and how the arena grows.
    # "kSameAsRequested" keeps several full-size sessions in one process within the card (docs/gpu.md).
    gpu_mem_limit: int | None = option(None, "CUDA: cap on the session's GPU arena, in bytes", parse_optional_int,
                                       check=optional_positive_int)
    arena_extend_strategy: str = option("kNextPowerOfTwo", "CUDA: how the GPU arena grows", parse_str,
                                        choices=ARENA_EXTEND_STRATEGIES)
    # Subnormal floats flushed to zero: on weights whose attention is sharp, exp underflow in the softmax
    # makes every attention kernel 3-4x slower on CPUs with a denormal penalty (Intel; docs/engines.md).
    denormal_as_zero: bool = option(True, "flush subnormal floats to zero (onnxruntime's session."
                                          "set_denormal_as_zero): no 3-4x cliff on sharp attention",
                                    parse_bool, check=boolean)

    def __post_init__(self) -> None:
        check_options(self)


def cuda_provider_options(config: SessionConfig) -> dict[str, str]:
    """onnxruntime CUDAExecutionProvider options for `config`."""
    options = {"arena_extend_strategy": config.arena_extend_strategy}
    if config.gpu_mem_limit is not None:
        options["gpu_mem_limit"] = str(config.gpu_mem_limit)
    return options


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
    """An InferenceSession for one graph file (`threads` and `config` as EncoderConfig validated them);
    a corrupt or unreadable file names itself."""
    config = config or SessionConfig()
    options = ort.SessionOptions()
    options.graph_optimization_level = OPTIMIZATION_LEVELS[config.graph_optimization_level]
    options.enable_cpu_mem_arena = config.enable_cpu_mem_arena
    options.enable_mem_pattern = config.enable_mem_pattern
    options.log_severity_level = 3
    options.add_session_config_entry(DENORMAL_AS_ZERO, "1" if config.denormal_as_zero else "0")
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    cuda_options = cuda_provider_options(config)
    providers = providers_for(device)
    provider_options = [cuda_options if p == "CUDAExecutionProvider" else {} for p in providers]
    try:
        session = inference_session(graph_path, options, providers, provider_options)
    except Exception as exc:  # onnxruntime raises several unrelated exception types on bad files
        raise ModelFolderError(f"cannot load ONNX graph {graph_path}: {str(exc).strip()[:500]}") from exc
    if providers[0] not in session.get_providers():
        # onnxruntime only warns when a provider fails to initialize (e.g. missing CUDA/cuDNN
        # libraries) and silently runs on the CPU instead.
        raise DeviceUnavailableError(
            f"device={device!r} was requested but onnxruntime could not initialize {providers[0]} "
            f"(session runs on {', '.join(session.get_providers())}); check the CUDA/cuDNN libraries "
            "onnxruntime-gpu needs, or use device='cpu'"
        )
    return session


def inference_session(model: str | bytes, options: ort.SessionOptions, providers: list[str],
                      provider_options: list[dict] | None = None) -> ort.InferenceSession:
    """`ort.InferenceSession`, the calling thread's floating-point environment as it was: the process's first
    session sets or clears FTZ/DAZ on the thread that creates it, for good (float_environment)."""
    with kept():
        return ort.InferenceSession(model, sess_options=options, providers=providers,
                                    provider_options=provider_options)


BINDING_DEVICES = {"CUDAExecutionProvider": "cuda", "CPUExecutionProvider": "cpu"}


def binding_device(session: ort.InferenceSession) -> tuple[str, int]:
    """(device_type, device_id) of the session's first provider: where IOBinding places inputs and outputs."""
    provider = session.get_providers()[0]
    if provider not in BINDING_DEVICES:
        raise DeviceUnavailableError(f"io_binding supports {', '.join(BINDING_DEVICES)}, not {provider}")
    device_id = session.get_provider_options().get(provider, {}).get("device_id", 0)
    return BINDING_DEVICES[provider], int(device_id)


def run_with_binding(
    session: ort.InferenceSession, output_name: str, inputs: Mapping[str, np.ndarray], device: tuple[str, int]
) -> np.ndarray:
    """One run through IOBinding: each input copied to `device` once, the one output allocated there
    by onnxruntime and copied to host memory once. Thread-safe: one binding per call."""
    device_type, device_id = device
    binding = session.io_binding()
    # Keep the OrtValues (and the arrays a CPU OrtValue wraps without copying) alive until the run ends.
    values = [
        ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), device_type, device_id)
        for array in inputs.values()
    ]
    for name, value in zip(inputs, values, strict=True):
        binding.bind_ortvalue_input(name, value)
    binding.bind_output(output_name, device_type, device_id)
    session.run_with_iobinding(binding)
    return binding.copy_outputs_to_cpu()[0]
