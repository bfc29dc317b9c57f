"""The reference vectors a model folder carries: the float64 PyTorch vectors of the fidelity set, with its texts,
so that ``colbert-onnx verify`` recomputes the gate figures with the engine and CPU at hand (runtime/verify.py)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from colbert_onnx.manifest import Manifest
from colbert_onnx.verify import REFERENCE_FILE

from .checkpoint import sha256_file
from .fidelity import Outputs, fidelity_texts


def write_reference(out: Path, manifest: Manifest, references: Sequence[dict[int, Outputs]],
                    document_max_length: int) -> Manifest:
    """Write reference.npz (per head: the query vectors and every real document token's vector) and record it, with
    the texts, in the manifest. Stored as float16: half the bytes of float32 (4 MB for the toy trio), and the
    rounding moves a unit vector's cosine by ~4e-8, 250x inside the tightest gate (fp32: mean 0.99999)."""
    arrays = {}
    for per_graph in references:
        for dim, outputs in per_graph.items():
            arrays[f"queries_{dim}"] = outputs.queries.astype(np.float16)
            arrays[f"doc_tokens_{dim}"] = outputs.doc_tokens.astype(np.float16)
    np.savez_compressed(out / REFERENCE_FILE, **arrays)
    record = {
        "file": REFERENCE_FILE,
        "sha256": sha256_file(out / REFERENCE_FILE),
        "what": "float64 PyTorch vectors of the fidelity set (stored float16): queries, then every real token "
                "of the documents sorted by token count",
        "heads": sorted({d for per_graph in references for d in per_graph}, reverse=True),
        "document_max_length": document_max_length,
        "texts": fidelity_texts(),
    }
    return dataclasses.replace(manifest, reference=record)
