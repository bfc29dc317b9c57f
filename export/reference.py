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
    the texts, in the manifest. Stored float64, as computed: verify must reproduce the export's figures on the same CPU,
    and the ranking gates (top-10, Spearman) are not smooth in the reference. On a sharp checkpoint whose MaxSim
    scores sit within float16 rounding of each other, a float16 copy (tried first: half of float32's bytes)
    turned a passing fp32 graph's top-10 overlap of 0.946 into 0.283 (docs/engines.md). Not zip-compressed: float64
    vectors shrink by 4 % for 20x the time (1 s of every export, 18 MB for the three heads)."""
    arrays = {}
    for per_graph in references:
        for dim, outputs in per_graph.items():
            arrays[f"queries_{dim}"] = np.asarray(outputs.queries, dtype=np.float64)
            arrays[f"doc_tokens_{dim}"] = np.asarray(outputs.doc_tokens, dtype=np.float64)
    np.savez(out / REFERENCE_FILE, **arrays)
    record = {
        "file": REFERENCE_FILE,
        "sha256": sha256_file(out / REFERENCE_FILE),
        "what": "float64 PyTorch vectors of the fidelity set: queries, then every real token "
                "of the documents sorted by token count",
        "heads": sorted({d for per_graph in references for d in per_graph}, reverse=True),
        "document_max_length": document_max_length,
        # per head: MaxSim differences up to this are ties the ranking gates do not judge (runtime/fidelity.py)
        "score_resolution": {str(dim): float(outputs.score_resolution) for per_graph in references
                             for dim, outputs in sorted(per_graph.items(), reverse=True)},
        "texts": fidelity_texts(),
    }
    return dataclasses.replace(manifest, reference=record)
