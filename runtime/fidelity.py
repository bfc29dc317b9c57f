"""Fidelity metrics and gates: token cosines and MaxSim ranking agreement of a graph's vectors against the float64
PyTorch reference. The exporter measures every graph with them (export/fidelity.py); ``colbert-onnx verify``
recomputes them with the engine and CPU at hand (verify.py). numpy only."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .scoring import maxsim

# Thresholds of issue 3, checked on every head.
# int8's mean token cosine is held on every text too (issue 23: the mean over all tokens let one text of an
# outlier checkpoint sit at 0.9949).
GATES = {
    "int8": {"mean_token_cosine": 0.995, "worst_text_mean_token_cosine": 0.995, "min_token_cosine": 0.98,
             "top10_overlap": 0.9, "spearman": 0.95},
    "fp16": {"mean_token_cosine": 0.999, "top10_overlap": 0.9, "spearman": 0.95},
    "fp32": {"mean_token_cosine": 0.99999, "top10_overlap": 0.9, "spearman": 0.95},
}
TOP_K = 10
# A reference's MaxSim scores closer than this many times the model's own fp32-vs-float64 score error are ties,
# and never closer than this many float32 spacings of the largest score (the candidate's MaxSim runs in float32).
RESOLUTION_FACTOR = 8.0
RESOLUTION_FLOOR_ULPS = 16


@dataclass(frozen=True)
class Outputs:
    """One model's vectors on a FidelitySet, for one head."""

    queries: np.ndarray  # (n_queries, query_len, dim); float64 for the reference, float32 for graphs
    doc_tokens: np.ndarray  # (real document tokens, dim)
    documents: list[np.ndarray]  # per document, skiplist removed (MaxSim input)
    # On a reference: MaxSim score differences up to this are ties the rankings are not judged on (score_resolution).
    score_resolution: float = 0.0


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties), numpy only."""
    return _pearson(_average_ranks(np.asarray(a, dtype=np.float64)), _average_ranks(np.asarray(b, dtype=np.float64)))


def score_resolution(reference: Outputs, fp32: Outputs) -> float:
    """The MaxSim score difference up to which two documents count as tied: RESOLUTION_FACTOR x the largest score
    difference between the model's own fp32 evaluation and its float64 one on the set, at least RESOLUTION_FLOOR_ULPS
    float32 spacings of the largest score. An order the model's fp32 arithmetic cannot resolve is no property of the
    checkpoint that a graph could keep or lose: on checkpoints whose scores sit within 1e-5 of each other
    (degenerate random heads), exact fp32 graphs otherwise "missed" the ranking gates (docs/quantization.md)."""
    scores = maxsim(reference.queries, reference.documents)
    diff = np.abs(scores - maxsim(fp32.queries, fp32.documents))
    if not diff.size:
        return 0.0
    floor = RESOLUTION_FLOOR_ULPS * float(np.spacing(np.float32(np.abs(scores).max())))
    return float(max(RESOLUTION_FACTOR * diff.max(), floor))


def top_k_agreement(reference: np.ndarray, candidate: np.ndarray, top_k: int, resolution: float = 0.0) -> float:
    """Share of the candidate's top `top_k` documents that the reference ranks in its top `top_k`, a document within
    `resolution` of the reference's k-th score counting as in it. Without ties: the plain top-k overlap."""
    k = min(top_k, len(reference))
    kth = np.sort(reference)[::-1][k - 1]
    picked = np.argsort(-candidate, kind="stable")[:k]
    return float(np.mean(reference[picked] >= kth - resolution))


def tie_aware_spearman(reference: np.ndarray, candidate: np.ndarray, resolution: float = 0.0) -> float:
    """Spearman's rho on the pairs the reference resolves: each document's rank is the number of documents it beats,
    a pair whose reference scores lie within `resolution` counting half to each, in the reference's ranks and the
    candidate's alike. A candidate keeping every resolved order scores 1.0; without a resolution this is the plain
    Spearman (average ranks), the reference's exact ties being the candidate's too. O(documents^2) per query."""
    reference = np.asarray(reference, dtype=np.float64)
    candidate = np.asarray(candidate, dtype=np.float64)
    resolved = np.abs(reference[:, None] - reference[None, :]) > resolution
    wins = (candidate[:, None] > candidate[None, :]) + 0.5 * (candidate[:, None] == candidate[None, :])
    ref_ranks = np.where(resolved, reference[:, None] > reference[None, :], 0.5).sum(axis=1)
    cand_ranks = np.where(resolved, wins, 0.5).sum(axis=1)
    return _pearson(ref_ranks, cand_ranks)


def _average_ranks(x: np.ndarray) -> np.ndarray:
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - (counts - 1) / 2.0) - 1.0)[inverse]


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a - a.mean(), b - b.mean()
    denom = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denom) if denom > 0 else 1.0


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.reshape(-1, a.shape[-1]).astype(np.float64)
    b = b.reshape(-1, b.shape[-1]).astype(np.float64)
    return (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-12)


def token_cosines(reference: Outputs, candidate: Outputs) -> np.ndarray:
    """Cosine of every query token (`<mask>` slots included) and every real document token with the reference."""
    return np.concatenate(
        [_cosines(reference.queries, candidate.queries), _cosines(reference.doc_tokens, candidate.doc_tokens)]
    )


def compare(reference: Outputs, candidate: Outputs, top_k: int = TOP_K) -> dict:
    """Token cosines (queries incl. `<mask>` slots, every real document token) and MaxSim ranking agreement, on
    the orders the reference resolves (`reference.score_resolution`)."""
    cos = token_cosines(reference, candidate)
    per_text = [_cosines(r, c).mean() for r, c in zip(reference.queries, candidate.queries, strict=True)]
    per_text += [_cosines(r, c).mean() for r, c in zip(reference.documents, candidate.documents, strict=True) if len(r)]
    ref_scores = maxsim(reference.queries, reference.documents)
    cand_scores = maxsim(candidate.queries, candidate.documents)
    resolution = reference.score_resolution
    overlaps = [top_k_agreement(r, c, top_k, resolution) for r, c in zip(ref_scores, cand_scores, strict=True)]
    rhos = [tie_aware_spearman(r, c, resolution) for r, c in zip(ref_scores, cand_scores, strict=True)]
    return {
        "mean_token_cosine": float(cos.mean()),
        "min_token_cosine": float(cos.min()),
        "worst_text_mean_token_cosine": float(min(per_text)),
        "top10_overlap": float(np.mean(overlaps)),
        "min_top10_overlap": float(np.min(overlaps)),
        "spearman": float(np.mean(rhos)),
        "min_spearman": float(np.min(rhos)),
        "score_resolution": float(resolution),
        "finite": bool(np.isfinite(candidate.queries).all() and np.isfinite(candidate.doc_tokens).all()),
        "queries": int(reference.queries.shape[0]),
        "documents": len(reference.documents),
        "tokens": int(cos.size),
    }


def judge(reference: dict[int, Outputs], got: dict[int, Outputs], dims, gates: str) -> dict[str, dict]:
    """Per head: `got`'s metrics against `reference`, with the verdict of the `gates` tier."""
    result = {}
    for d in dims:
        metrics = compare(reference[d], got[d])
        metrics["passed"] = passes(gates, metrics)
        result[str(d)] = metrics
    return result


def passes(precision: str, metrics: dict) -> bool:
    """True when every gate of `precision` holds (and the output is finite)."""
    return not gate_misses(precision, metrics)


def gate_misses(precision: str, metrics: dict) -> list[str]:
    """Each gate of `precision` that `metrics` miss, as 'name value < gate' (and non-finite output); [] if none."""
    missed = [] if metrics.get("finite", True) else ["finite: the vectors hold NaN or inf"]
    return missed + [f"{k} {metrics[k]:.6g} < {v:g}" for k, v in GATES.get(precision, {}).items() if metrics[k] < v]
