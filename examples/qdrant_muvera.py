"""Candidates from a dense MUVERA collection in Qdrant, reranked with exact MaxSim (docs/muvera.md).

    make demo                                  # creates models/toy-onnx
    pip install -e '.[qdrant]'
    python examples/qdrant_muvera.py           # local in-process Qdrant (":memory:")
    python examples/qdrant_muvera.py --url http://localhost:6333 --query "capital of Spain" --candidates 50

Each document is stored once as one dense vector, its MUVERA encoding (``output="muvera"``), with its token
vectors kept beside it (here in memory; in production in the payload, a second multivector, or a Parquet file).
A query's MUVERA encoding fetches ``--candidates`` points by dot product, then MaxSim over their token vectors
gives the final order: any single-vector index can do the first stage.
"""

from __future__ import annotations

import argparse

import numpy as np

from colbert_onnx import ColbertEncoder, maxsim
from colbert_onnx.muvera import fde_dim

CORPUS = [
    "Berlin is the capital and largest city of Germany.",
    "Berlin ist die Hauptstadt der Bundesrepublik Deutschland.",
    "Paris est la capitale de la France.",
    "Madrid es la capital de España y su ciudad más poblada.",
    "Roma è la capitale d'Italia.",
    "東京は日本の首都です。",
    "Москва — столица России.",
    "The cat sleeps on the sofa all morning.",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "def add(a, b): return a + b",
]
QUERIES = ["capital of Germany", "¿Cuál es la capital de España?", "how do plants use light"]


def main(argv: list[str] | None = None) -> int:
    """Index the corpus as MUVERA vectors, then print each query's reranked hits."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default="models/toy-onnx", help="folder written by `colbert-onnx export`")
    parser.add_argument("--url", default=None, help="Qdrant server URL; default: local in-process mode")
    parser.add_argument("--dim", type=int, default=128, help="head")
    parser.add_argument("--muvera", default="muvera:k_sim=4,dim_proj=16,r_reps=20", help="MUVERA spec")
    parser.add_argument("--query", action="append", default=None, help="query text (repeatable)")
    parser.add_argument("--candidates", type=int, default=5, help="points fetched by the MUVERA vector")
    parser.add_argument("--limit", type=int, default=3)
    parser.add_argument("--collection", default="colbert-onnx-muvera")
    args = parser.parse_args(argv)

    from qdrant_client import QdrantClient, models

    client = QdrantClient(url=args.url) if args.url else QdrantClient(":memory:")
    encoder = ColbertEncoder(args.model_dir, dim=args.dim)
    token_vectors = encoder.encode_documents(CORPUS)
    # The same vectors, encoded: documents and queries must share one MUVERA spec (its seed included).
    fdes = encoder.encode_documents(CORPUS, output=args.muvera)
    if client.collection_exists(args.collection):
        client.delete_collection(args.collection)
    client.create_collection(
        args.collection, vectors_config=models.VectorParams(size=fde_dim(args.muvera), distance=models.Distance.DOT)
    )
    client.upsert(args.collection, [
        models.PointStruct(id=i, vector=fde.tolist(), payload={"text": text})
        for i, (fde, text) in enumerate(zip(fdes, CORPUS, strict=True))
    ])
    print(f"== {args.collection}: {len(CORPUS)} documents, one {fde_dim(args.muvera)}-value MUVERA vector each")
    for query in args.query or QUERIES:
        query_vectors = encoder.encode_queries([query])[0]
        query_fde = encoder.encode_queries([query], output=args.muvera)[0]
        hits = client.query_points(args.collection, query=query_fde.tolist(), limit=args.candidates).points
        ids = [hit.id for hit in hits]
        scores = maxsim(query_vectors, [token_vectors[i] for i in ids])
        print(f"  query: {query}  ({len(ids)} MUVERA candidates, reranked by MaxSim)")
        for rank in np.argsort(-scores, kind="stable")[: args.limit]:
            print(f"    {scores[rank]:8.4f}  {CORPUS[ids[rank]]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
