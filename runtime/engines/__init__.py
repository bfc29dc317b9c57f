"""Inference engines behind one small interface: ``run(ids, mask) -> {dim: vectors}``.

The data path (tokenize, plan, pad, run, merge, finish: encoder.py) calls only :class:`Engine`; each engine
lives in its own module and imports its library there: onnxruntime (CPU, CUDA; the base install) and
OpenVINO (CPU; the ``[openvino]`` extra, imported only when asked for). Which engine runs by default is
decided per CPU (choice.py, docs/engines.md). Ids reach an engine only after the encoder's checks
(OpenVINO's Gather returns silently on ids outside the vocabulary).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np

ENGINES = ("onnxruntime", "openvino")
ENGINE_CHOICES = ("auto", *ENGINES)


class Engine(Protocol):
    """One loaded graph: (batch, seq) int64 ids and mask -> {dim: (batch, seq, dim) L2-normalized float32}."""

    name: str
    outputs: dict[int, str]
    # False where the engine holds heads x n x n attention scores for a document of n tokens (memory grows with n^2)
    attention_fused: bool

    def run(self, ids: np.ndarray, mask: np.ndarray, dims: Sequence[int] | None = None) -> dict[int, np.ndarray]:
        """The vectors of every head in `dims` (None: every head of the graph). Thread-safe."""
        ...

    def describe(self) -> str:
        """One line: the engine, its version, device and settings."""
        ...


GRAPH_INPUTS = ("input_ids", "attention_mask")


def signature_mismatch(graph_path: str, outputs: Mapping[int, str], inputs: Sequence[str],
                       output_dims: Mapping[str, object]) -> str | None:
    """Why a loaded graph is not the one the manifest describes (its `inputs`, and each output's last dimension,
    None where symbolic), or None when it is: a wrong file or a hand-edited manifest must fail when the folder is
    opened, not as a runtime error later or as vectors of another head."""
    missing = [name for name in GRAPH_INPUTS if name not in inputs]
    if missing:
        return f"{graph_path} takes {', '.join(inputs) or 'no inputs'}, not {', '.join(GRAPH_INPUTS)}"
    for dim, name in outputs.items():
        if name not in output_dims:
            return (f"the manifest names output {name!r} for head {dim}, which {graph_path} does not have "
                    f"(it has {', '.join(output_dims) or 'none'})")
        last = output_dims[name]
        if isinstance(last, int) and last != dim:
            return f"output {name!r} of {graph_path} gives {last}-dim vectors, but the manifest serves it as head {dim}"
    return None


__all__ = ["ENGINES", "ENGINE_CHOICES", "GRAPH_INPUTS", "Engine", "signature_mismatch"]
