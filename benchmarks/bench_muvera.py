"""How well MUVERA candidates recover exact MaxSim top-10, per head dim and FDE dim (not a test).

    .venv/bin/python -m benchmarks.bench_muvera [--source encoder|synthetic] [--documents 10000] [--queries 100]
        [--write docs/runs/X.md]

``--source encoder`` (default): the small bench model (4 x 256, vocab 250004, random weights; heads 128/96/64
on one backbone; models/bench-muvera) encodes synthetic multilingual documents (8-24 words drawn from
export/data/multilingual.txt) and queries (3-6 words of one document plus 1 random word). ``--source
synthetic``: clustered multi-vectors without a model (:func:`synthetic_vectors`). For each head, the
exact MaxSim top-10 of every query over the whole corpus is the reference; for each MUVERA spec, the documents'
and queries' encodings are scored by dot product and the top 100 / 1000 candidates kept. Reported: recall@10 of
the FDE ranking alone, and of MaxSim over the 100 / 1000 candidates (= the share of the exact top-10 among
them, since the rerank is exact), plus encoding time and bytes per document. Prints Markdown; ``--write`` saves it.

Random weights make MaxSim a soft lexical match over token embeddings, so absolute recall figures are those of
this model and corpus; the ordering of the specs is what carries over (docs/muvera.md).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

from benchmarks.machine import describe
from benchmarks.sizes import SIZES
from colbert_onnx import ColbertEncoder
from colbert_onnx.muvera import Muvera, parse_output
from colbert_onnx.packed import PackedDocuments

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "models" / "bench-muvera"
SMALL = SIZES["small"]  # make bench's BENCH_SIZE=small
SPECS = ("muvera:k_sim=3,dim_proj=8,r_reps=10", "muvera:k_sim=4,dim_proj=8,r_reps=10",
         "muvera:k_sim=4,dim_proj=16,r_reps=20", "muvera")  # the last: fastembed's defaults, 10240 values
CANDIDATES = (100, 1000)


def bench_model() -> Path:
    """The small bench trio's fp32 folder, generated and exported once (needs the export extra)."""
    onnx = MODEL / "onnx"
    if not (onnx / "manifest.json").is_file():
        from colbert_onnx.export import export_model, make_toy_trio

        trio = make_toy_trio(MODEL / "checkpoint", config_overrides=SMALL)
        export_model([trio[128], trio[96], trio[64]], onnx, check_parity=False, precisions="fp32")
    return onnx


def make_corpus(n_documents: int, n_queries: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Documents of 20-60 words from the shipped multilingual text; queries of 4-8 words of one document + 2 others."""
    text = (ROOT / "export" / "data" / "multilingual.txt").read_text(encoding="utf-8")
    words = sorted({w.strip(".,;:!?()\"'") for w in text.split()} - {""})
    rng = random.Random(seed)
    documents = [" ".join(rng.choices(words, k=rng.randint(8, 24))) for _ in range(n_documents)]
    queries = []
    for _ in range(n_queries):
        source = documents[rng.randrange(n_documents)].split()
        queries.append(" ".join(rng.sample(source, k=rng.randint(3, 6)) + rng.choices(words, k=1)))
    return documents, queries


def synthetic_vectors(dim: int, n_documents: int, n_queries: int, seed: int = 0
                      ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Clustered multi-vectors: a vocabulary of 20000 random unit "term" vectors drawn with Zipf frequencies;
    a document is 20-120 terms, each vector its term plus noise (cosine ~0.9 to the term); a query is 32 vectors:
    4-12 terms of one document and 1-2 random terms, each repeated (as mask augmentation does) with noise."""
    rng = np.random.default_rng(seed)

    def unit(x: np.ndarray) -> np.ndarray:
        return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)

    terms = unit(rng.normal(size=(20_000, dim)))
    weights = 1 / np.arange(1, 20_001) ** 0.8
    weights /= weights.sum()
    noise = 0.45 / np.sqrt(dim)
    doc_terms = [rng.choice(20_000, size=rng.integers(20, 121), p=weights) for _ in range(n_documents)]
    documents = [unit(terms[t] + noise * rng.normal(size=(len(t), dim))) for t in doc_terms]
    queries = []
    for _ in range(n_queries):
        source = doc_terms[rng.integers(n_documents)]
        own, other = rng.choice(source, size=rng.integers(4, 13)), rng.choice(20_000, size=rng.integers(1, 3))
        picked = np.concatenate([own, other])
        slots = np.resize(picked, 32)
        queries.append(unit(terms[slots] + noise * rng.normal(size=(32, dim))))
    return documents, queries


def recall(reference: np.ndarray, candidates: np.ndarray) -> float:
    """Mean share of each row of `reference` (exact top-10) found in the same row of `candidates`."""
    return float(np.mean([len(set(r) & set(c)) / len(r) for r, c in zip(reference, candidates, strict=True)]))


def run(source: str, n_documents: int, n_queries: int, threads: int | None, dims: tuple[int, ...] = (128, 96, 64),
        center: bool = False) -> str:
    if source == "encoder":
        documents, queries = make_corpus(n_documents, n_queries)
        base = ColbertEncoder(bench_model(), dim=128, threads=threads)
    rows, notes = [], []
    for dim in dims:
        start = time.perf_counter()
        if source == "encoder":
            encoder = base.for_dim(dim)
            doc_vectors = encoder.encode_documents(documents)
            query_vectors = encoder.encode_queries(queries)
        else:
            doc_vectors, query_vectors = synthetic_vectors(dim, n_documents, n_queries)
        encode_s = time.perf_counter() - start
        tokens = sum(len(d) for d in doc_vectors)
        sample = np.concatenate(doc_vectors)[np.random.default_rng(0).choice(tokens, 2000)]
        cosine = (sample @ sample.T)[np.triu_indices(2000, 1)].mean()
        notes.append(f"head {dim}: {n_documents} documents ({tokens} vectors, {tokens / n_documents:.1f} per "
                     f"document) made in {encode_s:.1f} s; mean cosine of two document vectors {cosine:.2f}")
        packed = PackedDocuments.from_list(doc_vectors, dtype=np.float32)
        exact = np.argsort(-packed.scores(query_vectors), axis=1, kind="stable")[:, :10]
        if center:  # an experiment, not fastembed's MUVERA: the corpus mean vector subtracted before encoding
            mean = np.concatenate(doc_vectors).mean(axis=0)
            doc_vectors = [d - mean for d in doc_vectors]
            query_vectors = [q - mean for q in query_vectors]
        for output in SPECS:
            muvera = Muvera(dim, parse_output(output))
            start = time.perf_counter()
            doc_fdes = muvera.encode_documents(doc_vectors)
            fde_s = time.perf_counter() - start
            fde_scores = muvera.encode_queries(query_vectors) @ doc_fdes.T
            ranked = np.argsort(-fde_scores, axis=1, kind="stable")
            rows.append({
                "dim": dim, "spec": parse_output(output), "fde_dim": muvera.fde_dim,
                "fde_alone": recall(exact, ranked[:, :10]),
                **{f"within_{c}": recall(exact, ranked[:, :c]) for c in CANDIDATES},
                "fde_ms_per_doc": 1000 * fde_s / n_documents,
            })
            del doc_fdes, fde_scores, ranked
            print(f"dim {dim} {output}: {rows[-1]}", file=sys.stderr)
    lines = [
        f"Machine: {describe()}.",
        ("Vectors: the small bench model (4 x 256, vocab 250004, random weights), heads 128/96/64, fp32, on "
         f"{n_documents} synthetic multilingual documents and {n_queries} queries" if source == "encoder" else
         f"Vectors: synthetic clustered multi-vectors (no model), {n_documents} documents and {n_queries} queries")
        + " (benchmarks/bench_muvera.py). Reference: exact MaxSim top-10 over the whole corpus."
        + (" The FDEs are of the vectors minus the corpus mean vector (--center, an experiment)." if center else ""),
        "",
        *[f"- {note}" for note in notes],
        "",
        "| head dim | k_sim | dim_proj | r_reps | FDE dim | recall@10, FDE alone | recall@10, MaxSim over 100 "
        "FDE candidates | recall@10, MaxSim over 1000 FDE candidates | FDE ms/doc | FDE bytes/doc (float32) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s = r["spec"]
        lines.append(f"| {r['dim']} | {s.k_sim} | {s.dim_proj} | {s.r_reps} | {r['fde_dim']} | {r['fde_alone']:.3f} | "
                     f"{r['within_100']:.3f} | {r['within_1000']:.3f} | {r['fde_ms_per_doc']:.2f} | "
                     f"{4 * r['fde_dim']} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", choices=["encoder", "synthetic"], default="encoder")
    parser.add_argument("--documents", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--dims", default="128,96,64", help="heads, comma-separated")
    parser.add_argument("--center", action="store_true",
                        help="experiment: encode the vectors minus the corpus mean vector (not fastembed's MUVERA)")
    parser.add_argument("--write", type=Path, default=None, help="also write the Markdown to this file")
    args = parser.parse_args()
    title = f"# {date.today()}: MUVERA candidates against exact MaxSim ({args.source} vectors)\n\n"
    dims = tuple(int(d) for d in args.dims.split(","))
    report = title + run(args.source, args.documents, args.queries, args.threads, dims, args.center)
    print(report)
    if args.write:
        args.write.write_text(report, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
