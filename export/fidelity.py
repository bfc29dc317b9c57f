"""Fidelity of a graph against the float64 PyTorch evaluation of its checkpoint: the fixed set, its batches and the
runners; the metrics and gates themselves are the runtime's (runtime/fidelity.py), which `verify` recomputes."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from colbert_onnx.fidelity import (
    GATES,
    TOP_K,
    Outputs,
    compare,
    judge,
    passes,
    score_resolution,
    spearman,
    token_cosines,
)
from colbert_onnx.session import inference_session
from colbert_onnx.tokenization import Preprocessor, pad_batch

from .corpus import multilingual_texts

Feeds = dict[str, np.ndarray]
__all__ = ["GATES", "TOP_K", "FidelitySet", "Outputs", "build_set", "calibration_texts", "collect", "compare",
           "cpu_session", "fidelity_texts", "float64_runner", "judge", "ort_runner", "passes", "reference_outputs",
           "spearman", "token_cosines", "torch_runner"]


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
    q_ids, q_mask = pre.query_feeds(texts["queries"])
    queries = {"input_ids": q_ids, "attention_mask": q_mask}
    seqs = sorted(pre.documents(texts["documents"]).ids, key=len)
    docs, keep = [], []
    for start in range(0, len(seqs), batch_size):
        chunk = seqs[start : start + batch_size]
        ids, mask = pad_batch(chunk, pre.special.pad)
        docs.append({"input_ids": ids, "attention_mask": mask})
        keep.append(mask.astype(bool) & ~np.isin(ids, np.asarray(skiplist, dtype=np.int64)))
    return FidelitySet(queries=queries, documents=docs, keep=keep)


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


def cpu_session(path: str, threads: int | None = None):
    """An onnxruntime CPU session of the graph file `path` for the exporter's own measurements: warnings off,
    `threads` intra-op threads (None: onnxruntime's default), the caller's flush mode kept (inference_session)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    return inference_session(path, options, ["CPUExecutionProvider"])


def ort_runner(path: str, dims: Sequence[int], threads: int | None = None) -> Callable[[Feeds], dict[int, np.ndarray]]:
    """feeds -> dim -> vectors for a colbert-onnx graph file (CPU)."""
    session = cpu_session(path, threads)
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


def reference_outputs(module, fset: FidelitySet, fp32: dict[int, Outputs] | None = None) -> dict[int, Outputs]:
    """The float64 reference of `module` on `fset` (module converted in place), every head carrying its score
    resolution: the ties its own fp32 outputs (`fp32`, else run here first) cannot resolve (runtime/fidelity.py)."""
    if fp32 is None:
        fp32 = collect(torch_runner(module), fset)
    reference = collect(float64_runner(module), fset)
    return {d: dataclasses.replace(ref, score_resolution=score_resolution(ref, fp32[d]))
            for d, ref in reference.items()}
