"""ONNX-vs-PyTorch parity of every head, measured on the runtime's own preprocessing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from colbert_onnx.encoder import ColbertEncoder
from colbert_onnx.tokenization import Preprocessor, pad_batch

from .checkpoint import Checkpoint
from .corpus import multilingual_texts

PARITY_TOLERANCE = 1e-4

# (ids, mask) -> dim -> (batch, seq, dim) vectors of the PyTorch reference
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
class ParityReference:
    """The parity batches and the PyTorch vectors of every head on them, kept as numpy.

    Recording the reference first lets the exporter free the PyTorch weights before it builds the
    int8/fp16 graphs (the full-size model would not fit twice in 24 GB).
    """

    batches: dict[str, tuple[np.ndarray, np.ndarray]]  # queries / documents / long -> (ids, mask)
    vectors: dict[int, dict[str, np.ndarray]]  # dim -> batch name -> reference vectors
    counts: dict[str, int]


def record_parity_reference(
    run: TorchRun, pre: Preprocessor, texts: dict[str, list[str]] | None = None, long_tokens: int = 2048
) -> ParityReference:
    """Build the `<mask>`-padded query batch, a right-padded multilingual document batch and one long
    document, and record the reference vectors of every head on them."""
    texts = texts or parity_texts()
    query_ids = pre.queries(texts["queries"])
    batches = {
        "queries": (query_ids, np.ones_like(query_ids)),
        "documents": pad_batch(pre.documents(texts["documents"]).ids, pre.special.pad),
        "long": pad_batch(pre.documents(texts["long"], long_tokens).ids, pre.special.pad),
    }
    vectors: dict[int, dict[str, np.ndarray]] = {}
    for name, (ids, mask) in batches.items():
        for dim, out in run(ids, mask).items():
            vectors.setdefault(dim, {})[name] = out
    counts = {"queries": len(texts["queries"]), "documents": len(texts["documents"]) + len(texts["long"])}
    return ParityReference(batches, vectors, counts)


def compare_parity(encoder: ColbertEncoder, reference: ParityReference) -> dict:
    """Max abs diff between the encoder's graph and the recorded reference, over real tokens only."""
    diffs = {}
    for name, (ids, mask) in reference.batches.items():
        real = mask.astype(bool)
        diffs[name] = float(np.abs(encoder._run(ids, mask)[real] - reference.vectors[encoder.dim][name][real]).max())
    worst = max(diffs.values())
    return {
        "max_abs_diff": worst,
        "query_max_abs_diff": diffs["queries"],
        "document_max_abs_diff": diffs["documents"],
        "long_document_max_abs_diff": diffs["long"],
        **reference.counts,
        "long_document_tokens": int(reference.batches["long"][0].shape[1]),
        "tolerance": PARITY_TOLERANCE,
        "passed": worst <= PARITY_TOLERANCE,
    }


def measure_parity(
    encoder: ColbertEncoder,
    checkpoint: Checkpoint,
    texts: dict[str, list[str]] | None = None,
    long_tokens: int = 2048,
) -> dict:
    """Parity of `encoder` against the checkpoint's own PyTorch module (ColbertModel)."""
    model = checkpoint.module()

    def run(ids: np.ndarray, mask: np.ndarray) -> dict[int, np.ndarray]:
        with torch.no_grad():
            return {checkpoint.dim: model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()}

    return compare_parity(encoder, record_parity_reference(run, encoder.preprocessor, texts, long_tokens))
