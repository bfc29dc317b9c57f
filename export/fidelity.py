"""Fidelity of a graph against the float64 PyTorch evaluation of its checkpoint: token cosines and MaxSim ranking."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from colbert_onnx.scoring import maxsim
from colbert_onnx.tokenization import Preprocessor, pad_batch

from .corpus import multilingual_texts

Feeds = dict[str, np.ndarray]
# Thresholds of issue 3, checked on every head; issue 23 holds int8's mean token cosine on every text too
# (the mean over all tokens let one text of an outlier checkpoint sit at 0.9949).
GATES = {
    "int8": {"mean_token_cosine": 0.995, "worst_text_mean_token_cosine": 0.995, "min_token_cosine": 0.98,
             "top10_overlap": 0.9, "spearman": 0.95},
    "fp16": {"mean_token_cosine": 0.999, "top10_overlap": 0.9, "spearman": 0.95},
    "fp32": {"mean_token_cosine": 0.99999, "top10_overlap": 0.9, "spearman": 0.95},
}
TOP_K = 10


def fidelity_texts(n_queries: int = 24, n_concat: int = 36) -> dict[str, list[str]]:
    """Fixed multilingual set: corpus sentences as queries; sentences and 2-3 sentence concatenations as documents."""
    corpus = multilingual_texts()
    documents = list(corpus)
    for i in range(n_concat):
        width = 2 + i % 2
        start = (7 * i) % len(corpus)
        documents.append(" ".join(corpus[(start + j) % len(corpus)] for j in range(width)))
    return {"queries": corpus[:n_queries], "documents": documents}


def calibration_texts() -> list[str]:
    """The shipped multilingual corpus, used to calibrate activation ranges (smoothing, static QDQ)."""
    return multilingual_texts()


@dataclass(frozen=True)
class FidelitySet:
    """Id batches for queries and documents, plus which document tokens MaxSim keeps."""

    queries: Feeds
    documents: list[Feeds]
    keep: list[np.ndarray]


def build_set(
    pre: Preprocessor, skiplist: Sequence[int], texts: dict[str, list[str]], batch_size: int = 16
) -> FidelitySet:
    """Batch queries (`<mask>`-padded) and documents (right-padded, grouped by length) like the runtime does."""
    q_ids = pre.queries(texts["queries"])
    queries = {"input_ids": q_ids, "attention_mask": np.ones_like(q_ids)}
    seqs = sorted(pre.documents(texts["documents"]).ids, key=len)
    docs, keep = [], []
    for start in range(0, len(seqs), batch_size):
        chunk = seqs[start : start + batch_size]
        ids, mask = pad_batch(chunk, pre.special.pad)
        docs.append({"input_ids": ids, "attention_mask": mask})
        keep.append(mask.astype(bool) & ~np.isin(ids, np.asarray(skiplist, dtype=np.int64)))
    return FidelitySet(queries=queries, documents=docs, keep=keep)


@dataclass(frozen=True)
class Outputs:
    """One model's vectors on a FidelitySet, for one head."""

    queries: np.ndarray  # (n_queries, query_len, dim); float64 for the reference, float32 for graphs
    doc_tokens: np.ndarray  # (real document tokens, dim)
    documents: list[np.ndarray]  # per document, skiplist removed (MaxSim input)


def _as_float(values) -> np.ndarray:
    """float64 stays float64 (the reference), anything else becomes float32."""
    array = np.asarray(values)
    return array if array.dtype == np.float64 else array.astype(np.float32)


def collect(run: Callable[[Feeds], dict[int, np.ndarray]], fset: FidelitySet) -> dict[int, Outputs]:
    """Run `run` (feeds -> dim -> vectors) over the set and gather what the metrics need, per head."""
    q = run(fset.queries)
    per_batch = [run(feed) for feed in fset.documents]
    result = {}
    for dim in q:
        tokens, docs = [], []
        for feed, keep, out in zip(fset.documents, fset.keep, per_batch, strict=True):
            real = feed["attention_mask"].astype(bool)
            vec = _as_float(out[dim])
            tokens.append(vec[real])
            docs.extend(vec[row][keep[row]] for row in range(vec.shape[0]))
        result[dim] = Outputs(_as_float(q[dim]), np.concatenate(tokens), docs)
    return result


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties), numpy only."""

    def ranks(x: np.ndarray) -> np.ndarray:
        _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
        ends = np.cumsum(counts)
        return ((ends - (counts - 1) / 2.0) - 1.0)[inverse]

    ra, rb = ranks(np.asarray(a, dtype=np.float64)), ranks(np.asarray(b, dtype=np.float64))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / denom) if denom > 0 else 1.0


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
    """Token cosines (queries incl. `<mask>` slots, every real document token) and MaxSim ranking agreement."""
    cos = token_cosines(reference, candidate)
    per_text = [_cosines(r, c).mean() for r, c in zip(reference.queries, candidate.queries, strict=True)]
    per_text += [_cosines(r, c).mean() for r, c in zip(reference.documents, candidate.documents, strict=True) if len(r)]
    ref_scores = maxsim(reference.queries, reference.documents)
    cand_scores = maxsim(candidate.queries, candidate.documents)
    overlaps, rhos = [], []
    for r, c in zip(ref_scores, cand_scores, strict=True):
        top_r = set(np.argsort(-r, kind="stable")[:top_k].tolist())
        top_c = set(np.argsort(-c, kind="stable")[:top_k].tolist())
        overlaps.append(len(top_r & top_c) / top_k)
        rhos.append(spearman(r, c))
    return {
        "mean_token_cosine": float(cos.mean()),
        "min_token_cosine": float(cos.min()),
        "worst_text_mean_token_cosine": float(min(per_text)),
        "top10_overlap": float(np.mean(overlaps)),
        "min_top10_overlap": float(np.min(overlaps)),
        "spearman": float(np.mean(rhos)),
        "min_spearman": float(np.min(rhos)),
        "finite": bool(np.isfinite(candidate.queries).all() and np.isfinite(candidate.doc_tokens).all()),
        "queries": int(reference.queries.shape[0]),
        "documents": len(reference.documents),
        "tokens": int(cos.size),
    }


def passes(precision: str, metrics: dict) -> bool:
    """True when every gate of `precision` holds (and the output is finite)."""
    gates = GATES.get(precision, {})
    return bool(metrics.get("finite", True)) and all(metrics[k] >= v for k, v in gates.items())


def ort_runner(path: str, dims: Sequence[int], threads: int | None = None) -> Callable[[Feeds], dict[int, np.ndarray]]:
    """feeds -> dim -> vectors for a colbert-onnx graph file (CPU)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
    names = [f"vectors_{d}" for d in dims]

    def run(feeds: Feeds) -> dict[int, np.ndarray]:
        return dict(zip(dims, session.run(names, feeds), strict=True))

    return run


def torch_runner(module) -> Callable[[Feeds], dict[int, np.ndarray]]:
    """feeds -> dim -> vectors for a MultiHeadColbert-like module, in the module's own dtype."""
    import torch

    def run(feeds: Feeds) -> dict[int, np.ndarray]:
        with torch.no_grad():
            outs = module(torch.from_numpy(feeds["input_ids"]), torch.from_numpy(feeds["attention_mask"]))
        return {d: o.numpy() for d, o in zip(module.dims, outs, strict=True)}

    return run


def float64_runner(module) -> Callable[[Feeds], dict[int, np.ndarray]]:
    """The reference every graph is judged against: `module` converted to float64 **in place**, as a runner.

    In place, so the full-size model costs its float64 copy only (4.5 GB), not that plus the fp32 one;
    callers take their fp32 figures first. Rotary tables stay float32 (modeling.Backbone.rotary_tables).
    """
    return torch_runner(module.double())
