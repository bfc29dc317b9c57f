"""The OpenVINO engine (CPU; the ``[openvino]`` extra): a plain-ops ONNX graph compiled by OpenVINO.

OpenVINO reads the optimized onnxruntime graph (com.microsoft RotaryEmbedding / MultiHeadAttention) without
an error and returns wrong vectors, so this engine runs only the graph the exporter writes for it
(export/openvino_graphs.py), measured against the float64 reference by the same gates.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence

import numpy as np

from ..errors import EngineUnavailableError
from ..float_environment import current, kept, running_with
from ..telemetry import import_without_telemetry
from . import signature_mismatch

INFERENCE_PRECISIONS = ("f32", "bf16")


def import_openvino():
    """The openvino package (imported without its usage telemetry: runtime/telemetry.py), or
    EngineUnavailableError naming the extra."""
    try:
        openvino = import_without_telemetry("openvino")
    except ImportError as exc:
        raise EngineUnavailableError(
            "engine='openvino' needs the openvino extra: pip install 'colbert-onnx[openvino]'") from exc
    return openvino


def openvino_available() -> bool:
    """Whether the openvino package can be imported here."""
    try:
        import_openvino()
    except EngineUnavailableError:
        return False
    return True


def plugin_message(exc: Exception) -> str:
    """OpenVINO's error without its C++ call-site lines ("Exception from src/...cpp:117:"), on one line."""
    lines = [line.strip() for line in str(exc).splitlines()]
    kept = [line for line in lines if line and not line.startswith("Exception from ")]
    return " ".join(kept)[:300] or type(exc).__name__


def _last_dim(shape) -> int | None:
    """The last dimension of an OpenVINO PartialShape, None where it is dynamic or the rank is."""
    if shape.rank.is_dynamic or len(shape) == 0 or shape[len(shape) - 1].is_dynamic:
        return None
    return shape[len(shape) - 1].get_length()


def attention_fused(compiled) -> bool:
    """Whether the CPU plugin fused every attention block of `compiled` (its runtime graph keeps no Softmax node).
    Unfused, the scores of one document of n tokens take heads x n x n floats per buffer: NNCF's int8 quantizes Q and
    K, and the plugin fuses int8 attention only with VNNI or AMX (one 8192-token document, 16 heads: 17 GB peak on
    an AVX2 Zen 3, against 1.3 GB for the f32 graph)."""
    def kind(op) -> str:
        info = op.get_rt_info()
        return info["layerType"].astype(str) if "layerType" in info else op.get_type_name()

    return all(kind(op) != "Softmax" for op in compiled.get_runtime_model().get_ops())


class OpenvinoEngine:
    """A graph compiled by OpenVINO's CPU plugin, at `inference_precision` (f32: exact; bf16: OpenVINO's default
    on CPUs with bf16 units, measured separately by the gates), subnormals flushed."""

    name = "openvino"

    def __init__(self, graph_path: str, outputs: Mapping[int, str], threads: int | None = None,
                 inference_precision: str = "f32") -> None:
        if inference_precision not in INFERENCE_PRECISIONS:
            raise EngineUnavailableError(f"unknown OpenVINO inference precision {inference_precision!r}; "
                                         f"choose one of {', '.join(INFERENCE_PRECISIONS)}")
        ov = import_openvino()
        self.version = ov.get_version().split("-")[0]
        self.graph_path = graph_path
        self.outputs = dict(outputs)
        self.inference_precision = inference_precision
        config: dict = {"INFERENCE_PRECISION_HINT": inference_precision, "CPU_DENORMALS_OPTIMIZATION": True}
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = threads
        core = ov.Core()
        with kept():  # the plugin sets FTZ/DAZ on this thread: the user's thread stays as it was
            try:
                self.compiled = core.compile_model(core.read_model(graph_path), "CPU", config)
            except Exception as exc:  # OpenVINO raises RuntimeError with a long C++ trace on bad graphs
                raise EngineUnavailableError(f"OpenVINO cannot compile {graph_path}: {plugin_message(exc)}") from exc
            self._flushing = current()  # what this thread's share of each run computes with
        # what the CPU plugin runs, which is not always what was asked: without bf16 units (avx512_bf16, amx_bf16) a
        # bf16 hint silently runs f32, so figures measured here would not be bf16's
        self.inference_precision = self.compiled.get_property("INFERENCE_PRECISION_HINT").to_string()
        self.requested_precision = inference_precision
        self.attention_fused = attention_fused(self.compiled)
        mismatch = signature_mismatch(
            graph_path, self.outputs, [n for i in self.compiled.inputs for n in i.get_names()],
            {n: _last_dim(o.get_partial_shape()) for o in self.compiled.outputs for n in o.get_names()})
        if mismatch:  # EngineUnavailableError: auto runs onnxruntime's graph instead, a forced engine is refused
            raise EngineUnavailableError(mismatch)
        self._ports = {d: self.compiled.output(name) for d, name in self.outputs.items()}
        self._local = threading.local()  # one infer request per thread: requests are not thread-safe

    def _request(self):
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        return request

    def run(self, ids: np.ndarray, mask: np.ndarray, dims: Sequence[int] | None = None) -> dict[int, np.ndarray]:
        dims = list(self.outputs) if dims is None else list(dims)
        with running_with(self._flushing):
            result = self._request().infer({"input_ids": np.ascontiguousarray(ids, dtype=np.int64),
                                            "attention_mask": np.ascontiguousarray(mask, dtype=np.int64)})
        return {d: np.array(result[self._ports[d]], dtype=np.float32) for d in dims}

    def describe(self) -> str:
        unfused = "" if self.attention_fused else (
            "; attention not fused by the CPU plugin here: one document of n tokens holds heads x n x n floats per "
            "layer (docs/engines.md)")
        return f"OpenVINO {self.version} on CPU, inference precision {self.inference_precision}{unfused}"
