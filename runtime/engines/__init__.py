"""Inference engines behind one small interface: ``run(ids, mask) -> {dim: vectors}``.

The data path (tokenize, plan, pad, run, merge, finish: encoder.py) calls only :class:`Engine`; each engine
lives in its own module and imports its library there: onnxruntime (CPU, CUDA; the base install) and
OpenVINO (CPU; the ``[openvino]`` extra, imported only when asked for). Which engine runs by default is
decided per CPU (choice.py, docs/engines.md). Ids reach an engine only after the encoder's checks
(OpenVINO's Gather returns silently on ids outside the vocabulary).
"""

from __future__ import annotations

from collections.abc import Sequence
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


__all__ = ["ENGINES", "ENGINE_CHOICES", "Engine"]
