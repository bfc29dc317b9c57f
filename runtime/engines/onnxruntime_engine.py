"""The onnxruntime engine (CPU, CUDA): one InferenceSession per graph file, IOBinding when asked."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import nullcontext

import numpy as np
import onnxruntime as ort

from ..errors import ModelFolderError
from ..float_environment import subnormals_flushed
from ..session import SessionConfig, binding_device, create_session, run_with_binding
from . import signature_mismatch


class OnnxruntimeEngine:
    """A graph on onnxruntime: the session of session.create_session (subnormals flushed by default: by its pool
    threads, and by the calling thread while it runs its share, float_environment)."""

    name = "onnxruntime"
    attention_fused = True  # the exported graphs run attention as MultiHeadAttention, in query steps (docs/memory.md)

    def __init__(self, graph_path: str, outputs: Mapping[int, str], device: str = "cpu", threads: int | None = None,
                 config: SessionConfig | None = None, io_binding: bool = False) -> None:
        self.graph_path = graph_path
        self.outputs = dict(outputs)
        self.device = device
        self.session = create_session(graph_path, device=device, threads=threads, config=config)
        self._flushes = device == "cpu" and (config or SessionConfig()).denormal_as_zero
        mismatch = signature_mismatch(graph_path, self.outputs, [i.name for i in self.session.get_inputs()],
                                      {o.name: (o.shape or [None])[-1] for o in self.session.get_outputs()})
        if mismatch:
            raise ModelFolderError(mismatch)
        self.binding = binding_device(self.session) if io_binding else None

    def run(self, ids: np.ndarray, mask: np.ndarray, dims: Sequence[int] | None = None) -> dict[int, np.ndarray]:
        """One run; with io_binding (one head asked) the inputs are copied to the session's device once and
        only that head's output comes back (session.run_with_binding)."""
        dims = list(self.outputs) if dims is None else list(dims)
        names = [self.outputs[d] for d in dims]
        inputs = {"input_ids": ids, "attention_mask": mask}
        with subnormals_flushed() if self._flushes else nullcontext():
            if self.binding is not None and len(names) == 1:
                values = [run_with_binding(self.session, names[0], inputs, self.binding)]
            else:
                values = self.session.run(names, inputs)
        return {d: np.asarray(v, dtype=np.float32) for d, v in zip(dims, values, strict=True)}

    def describe(self) -> str:
        return f"onnxruntime {ort.__version__} on {self.session.get_providers()[0]}"
