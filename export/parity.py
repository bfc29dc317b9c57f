"""ONNX-vs-PyTorch parity of every head, judged against a float64 evaluation, on the runtime's own preprocessing.

The gate is the graph against the float64 PyTorch evaluation of the same checkpoint, not against
another fp32 run: the fp32 PyTorch module rounds too, and on checkpoints whose LayerNorm gains
amplify a few channels (trained XLM-R-large has them) its own rounding reached 1.1-1.6e-4, charged to
a graph that was within 6e-5 of float64. The fp32-module figures are recorded beside it for information.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from colbert_onnx.encoder import ColbertEncoder
from colbert_onnx.tokenization import Preprocessor, pad_batch

from .checkpoint import Checkpoint
from .corpus import multilingual_texts
from .fidelity import float64_runner, torch_runner
from .modeling import MultiHeadColbert

PARITY_TOLERANCE = 1e-4
BATCHES = ("queries", "documents", "long")
# The reference the gate applies to, and the one recorded beside it.
GATE_REFERENCE, INFO_REFERENCE = "float64", "torch_fp32"

# (ids, mask) -> dim -> (batch, seq, dim) vectors of a PyTorch evaluation
TorchRun = Callable[[np.ndarray, np.ndarray], dict[int, np.ndarray]]


def parity_texts() -> dict[str, list[str]]:
    """Multilingual queries, short documents (one padded batch, empty ones included), a long text."""
    corpus = multilingual_texts()
    return {
        "queries": corpus[:16],
        "documents": corpus[16:40] + ["", "   "],
        "long": [" ".join(corpus)],
    }


@dataclass(frozen=True)
class ParityBatches:
    """The parity inputs: a `<mask>`-padded query batch, a right-padded document batch, one long document."""

    batches: dict[str, tuple[np.ndarray, np.ndarray]]  # queries / documents / long -> (ids, mask)
    counts: dict[str, int]


def parity_batches(pre: Preprocessor, texts: dict[str, list[str]] | None = None,
                   long_tokens: int = 2048) -> ParityBatches:
    texts = texts or parity_texts()
    query_ids = pre.queries(texts["queries"])
    batches = {
        "queries": (query_ids, np.ones_like(query_ids)),
        "documents": pad_batch(pre.documents(texts["documents"]).ids, pre.special.pad),
        "long": pad_batch(pre.documents(texts["long"], long_tokens).ids, pre.special.pad),
    }
    counts = {"queries": len(texts["queries"]), "documents": len(texts["documents"]) + len(texts["long"])}
    return ParityBatches(batches, counts)


@dataclass(frozen=True)
class ParityReference:
    """The parity batches and every head's PyTorch vectors on them, per reference, kept as numpy.

    Recording them first lets the exporter free the PyTorch weights before it builds the int8/fp16
    graphs (the full-size model would not fit twice in 24 GB).
    """

    inputs: ParityBatches
    vectors: dict[str, dict[int, dict[str, np.ndarray]]]  # reference -> dim -> batch name -> vectors

    @property
    def batches(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        return self.inputs.batches


def record_vectors(run: TorchRun, inputs: ParityBatches) -> dict[int, dict[str, np.ndarray]]:
    """dim -> batch name -> vectors of `run` on every parity batch."""
    vectors: dict[int, dict[str, np.ndarray]] = {}
    for name, (ids, mask) in inputs.batches.items():
        for dim, out in run(ids, mask).items():
            vectors.setdefault(dim, {})[name] = out
    return vectors


def _max_abs(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    real = mask.astype(bool)
    return float(np.abs(a[real].astype(np.float64) - b[real].astype(np.float64)).max())


def compare_vectors(got: dict[str, np.ndarray], reference: ParityReference, dim: int) -> dict:
    """Figures of one head's vectors `got` (batch name -> vectors) against both references, real tokens only."""
    per_ref = {
        ref: {name: _max_abs(got[name], vectors[dim][name], reference.batches[name][1]) for name in BATCHES}
        for ref, vectors in reference.vectors.items()
    }
    gate = per_ref[GATE_REFERENCE]
    worst = max(gate.values())
    result = {
        "reference": "float64 PyTorch evaluation of the same checkpoint",
        "max_abs_diff": worst,
        "query_max_abs_diff": gate["queries"],
        "document_max_abs_diff": gate["documents"],
        "long_document_max_abs_diff": gate["long"],
        **reference.inputs.counts,
        "long_document_tokens": int(reference.batches["long"][0].shape[1]),
        "tolerance": PARITY_TOLERANCE,
        "passed": worst <= PARITY_TOLERANCE,
    }
    if INFO_REFERENCE in per_ref:
        info = per_ref[INFO_REFERENCE]
        result["vs_torch_fp32"] = {"max_abs_diff": max(info.values()),
                                   **{f"{n}_max_abs_diff": v for n, v in info.items()}}
        result["torch_fp32_vs_float64_max_abs_diff"] = max(
            _max_abs(reference.vectors[INFO_REFERENCE][dim][n], reference.vectors[GATE_REFERENCE][dim][n],
                     reference.batches[n][1]) for n in BATCHES)
    return result


def compare_parity(encoder: ColbertEncoder, reference: ParityReference) -> dict:
    """Max abs diff between the encoder's graph and the recorded references, over real tokens only."""
    got = {name: encoder._run(ids, mask) for name, (ids, mask) in reference.batches.items()}
    return compare_vectors(got, reference, encoder.dim)


def parity_failure_message(failed: dict[str, dict]) -> str:
    """One line per head beyond tolerance: the worst batch, its figure against float64 and against fp32 torch."""
    lines = []
    for dim, figures in failed.items():
        batch = max(BATCHES, key=lambda n: figures[_gate_key(n)])
        line = (f"head {dim}: the {batch} batch differs from the float64 PyTorch evaluation by "
                f"{figures[_gate_key(batch)]:.3g} (tolerance {figures['tolerance']:g})")
        info = figures.get("vs_torch_fp32")
        if info:
            line += (f"; against the fp32 PyTorch module {info[f'{batch}_max_abs_diff']:.3g} (fp32 torch itself is "
                     f"{figures['torch_fp32_vs_float64_max_abs_diff']:.3g} from float64)")
        lines.append(line)
    return "ONNX output differs from PyTorch beyond tolerance: " + "; ".join(lines)


def _gate_key(batch: str) -> str:
    return {"queries": "query_max_abs_diff", "documents": "document_max_abs_diff",
            "long": "long_document_max_abs_diff"}[batch]


def record_parity_reference(module: MultiHeadColbert, inputs: ParityBatches) -> ParityReference:
    """Every head's vectors on the parity batches: the fp32 module first, then the module converted to
    float64 **in place** (float64_runner), so that the weights exist once in each precision at a time."""
    fp32 = record_vectors(_ids_runner(torch_runner(module)), inputs)
    f64 = record_vectors(_ids_runner(float64_runner(module)), inputs)
    return ParityReference(inputs, {GATE_REFERENCE: f64, INFO_REFERENCE: fp32})


def _ids_runner(run: Callable[[dict[str, np.ndarray]], dict[int, np.ndarray]]) -> TorchRun:
    def run_ids(ids: np.ndarray, mask: np.ndarray) -> dict[int, np.ndarray]:
        return run({"input_ids": ids, "attention_mask": mask})

    return run_ids


def measure_parity(
    encoder: ColbertEncoder,
    checkpoint: Checkpoint,
    texts: dict[str, list[str]] | None = None,
    long_tokens: int = 2048,
) -> dict:
    """Parity of `encoder` against the checkpoint's own PyTorch module, float64 (gate) and fp32 (information)."""
    module = MultiHeadColbert(checkpoint.module().roberta, {checkpoint.dim: checkpoint.head})
    inputs = parity_batches(encoder.preprocessor, texts, long_tokens)
    return compare_parity(encoder, record_parity_reference(module, inputs))
