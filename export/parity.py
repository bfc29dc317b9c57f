"""ONNX-vs-PyTorch parity of every head, measured on the runtime's own preprocessing."""

from __future__ import annotations

import numpy as np
import torch
from colbert_onnx.encoder import ColbertEncoder

from .checkpoint import Checkpoint
from .corpus import multilingual_texts

PARITY_TOLERANCE = 1e-4


def parity_texts() -> dict[str, list[str]]:
    """Multilingual queries, short documents (one padded batch, empty ones included), a long text."""
    corpus = multilingual_texts()
    return {
        "queries": corpus[:16],
        "documents": corpus[16:40] + ["", "   "],
        "long": [" ".join(corpus)],
    }


def _reference(model: torch.nn.Module, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()


def _document_diff(
    encoder: ColbertEncoder, model: torch.nn.Module, seqs: list[np.ndarray]
) -> tuple[float, int]:
    """Max abs diff over the real (unpadded) tokens of one right-padded batch, and its width."""
    width = max(len(s) for s in seqs)
    ids = np.full((len(seqs), width), encoder.preprocessor.special.pad, dtype=np.int64)
    mask = np.zeros_like(ids)
    for row, seq in enumerate(seqs):
        ids[row, : len(seq)] = seq
        mask[row, : len(seq)] = 1
    real = mask.astype(bool)
    return float(np.abs(encoder._run(ids, mask)[real] - _reference(model, ids, mask)[real]).max()), width


def measure_parity(
    encoder: ColbertEncoder,
    checkpoint: Checkpoint,
    texts: dict[str, list[str]] | None = None,
    long_tokens: int = 2048,
) -> dict:
    """Max abs diff between the ONNX graph and the checkpoint's PyTorch module, over real tokens.

    The same id batches (padded documents of mixed lengths, `<mask>`-padded queries) feed both.
    """
    texts = texts or parity_texts()
    model = checkpoint.module()
    pre = encoder.preprocessor
    query_ids = pre.queries(texts["queries"])
    query_mask = np.ones_like(query_ids)
    query_diff = float(
        np.abs(encoder._run(query_ids, query_mask) - _reference(model, query_ids, query_mask)).max()
    )
    doc_diff, _ = _document_diff(encoder, model, pre.documents(texts["documents"]).ids)
    long_diff, long_tokens = _document_diff(encoder, model, pre.documents(texts["long"], long_tokens).ids)
    worst = max(query_diff, doc_diff, long_diff)
    return {
        "max_abs_diff": worst,
        "query_max_abs_diff": query_diff,
        "document_max_abs_diff": doc_diff,
        "long_document_max_abs_diff": long_diff,
        "queries": len(texts["queries"]),
        "documents": len(texts["documents"]) + len(texts["long"]),
        "long_document_tokens": long_tokens,
        "tolerance": PARITY_TOLERANCE,
        "passed": worst <= PARITY_TOLERANCE,
    }
