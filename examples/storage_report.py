"""Measure compact outputs and token pooling against float32: rerank agreement and bytes per token.

    python examples/storage_report.py --model-dir models/toy-onnx

Documents: the 88 sentences of export/data/multilingual.txt plus 44 two-sentence passages; queries:
the first words of every third sentence. For each query all documents are ranked with float32
vectors and with each compact kind; reported are the mean top-10 overlap and the mean Spearman
correlation of the scores (numpy, average ranks for ties), and stored bytes per document token.
Prints a Markdown table (the source of the tables in docs/runs/2026-11-25-storage.md, read in docs/storage.md).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from colbert_onnx import ColbertEncoder, maxsim
from colbert_onnx.compact import bytes_per_token, finish_documents
from colbert_onnx.scoring import maxsim_binary

CORPUS = Path(__file__).resolve().parent.parent / "export" / "data" / "multilingual.txt"


def average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 of `x`, ties sharing their average rank."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.arange(len(x), dtype=np.float64)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.zeros(len(counts))
    np.add.at(sums, inverse, ranks)
    return (sums / counts)[inverse]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two score vectors."""
    ra, rb = average_ranks(a), average_ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / denom) if denom else 0.0


def top_overlap(a: np.ndarray, b: np.ndarray, k: int = 10) -> float:
    """|top-k(a) ∩ top-k(b)| / k."""
    ta = set(np.argsort(-a, kind="stable")[:k].tolist())
    tb = set(np.argsort(-b, kind="stable")[:k].tolist())
    return len(ta & tb) / k


def corpus() -> tuple[list[str], list[str]]:
    """(documents, queries) from the shipped multilingual sentences."""
    lines = [line for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]
    documents = lines + [lines[i] + " " + lines[i + 1] for i in range(0, len(lines) - 1, 2)]
    queries = [" ".join(line.split()[:5]) for line in lines[::3]]
    return documents, queries


def measure(encoder: ColbertEncoder, documents: list[str], queries: list[str]) -> tuple[list[dict], dict]:
    """One row per kind (agreement with float32, storage) and timings.

    The documents are encoded once; every kind is then derived with ``finish_documents``, the very
    post-processing that ``encode_documents(output=..., pool_factor=...)`` applies.
    """
    t0 = time.perf_counter()
    q = np.stack(encoder.encode_queries(queries))
    t1 = time.perf_counter()
    base_docs = encoder.encode_documents(documents)
    t2 = time.perf_counter()
    timings = {"queries_s": t1 - t0, "documents_s": t2 - t1}
    base = maxsim(q, base_docs)
    tokens = sum(d.shape[0] for d in base_docs)
    variants: list[tuple[str, list, np.ndarray]] = []
    for kind in ("float16", "int8", "binary", "ubinary"):
        docs = finish_documents(base_docs, kind)
        variants.append((kind, docs, maxsim(q, docs)))
    binary = finish_documents(base_docs, "binary")
    variants.append(("binary, float query", binary, maxsim_binary(q, binary, binarize_query=False)))
    for k in (2, 3, 4):
        t0 = time.perf_counter()
        pooled = finish_documents(base_docs, "float32", k)
        timings[f"pool_{k}_s"] = time.perf_counter() - t0
        variants.append((f"pool {k}", pooled, maxsim(q, pooled)))
        docs = finish_documents(pooled, "int8")
        variants.append((f"pool {k} + int8", docs, maxsim(q, docs)))
    rows = [{"kind": "float32", "overlap": 1.0, "spearman": 1.0, "bytes": bytes_per_token(base_docs), "tokens": 1.0}]
    for name, docs, scores in variants:
        rows.append(
            {
                "kind": name,
                "overlap": float(np.mean([top_overlap(base[i], scores[i]) for i in range(len(queries))])),
                "spearman": float(np.mean([spearman(base[i], scores[i]) for i in range(len(queries))])),
                "bytes": sum(int(d.nbytes) for d in docs) / tokens,
                "tokens": sum(d.shape[0] for d in docs) / tokens,
            }
        )
    timings["document_tokens"] = tokens
    return rows, timings


def main() -> None:
    """Print the Markdown table for each requested head."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default="models/toy-onnx")
    parser.add_argument("--dims", type=int, nargs="+", default=[128, 96, 64])
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    documents, queries = corpus()
    for dim in args.dims:
        encoder = ColbertEncoder(args.model_dir, dim=dim, threads=args.threads)
        rows, timings = measure(encoder, documents, queries)
        print(f"\n{args.model_dir}, head {dim}: {len(documents)} documents, {len(queries)} queries")
        shown = (f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in timings.items())
        print("timings: " + ", ".join(shown))
        print()
        print("| kind | top-10 overlap | Spearman | vectors kept | bytes / original token |")
        print("|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['kind']} | {r['overlap']:.3f} | {r['spearman']:.4f} | {r['tokens']:.3f} | {r['bytes']:.1f} |")


if __name__ == "__main__":
    main()
