"""Store ColBERT multi-vectors in Qdrant (one MAX_SIM collection per head) and search them.

    make demo                                  # creates models/toy-onnx
    pip install -e '.[qdrant]'
    python examples/qdrant_search.py           # local in-process Qdrant (":memory:")
    python examples/qdrant_search.py --url http://localhost:6333 --query "capital of Spain"

Every document becomes one point whose vector is the document's token vectors; queries are
searched with their 32 query vectors, and Qdrant ranks by MaxSim (the same scores as
``ColbertEncoder.rerank``).
"""

from __future__ import annotations

import argparse

from colbert_onnx import ColbertEncoder
from colbert_onnx.qdrant import index_documents, search

CORPUS = [
    "Berlin is the capital and largest city of Germany.",
    "Berlin ist die Hauptstadt der Bundesrepublik Deutschland.",
    "Paris est la capitale de la France.",
    "Madrid es la capital de España y su ciudad más poblada.",
    "Roma è la capitale d'Italia.",
    "東京は日本の首都です。",
    "北京是中华人民共和国的首都。",
    "Москва — столица России.",
    "القاهرة هي عاصمة مصر.",
    "The cat sleeps on the sofa all morning.",
    "Photosynthesis converts light energy into chemical energy in plants.",
    "def add(a, b): return a + b",
]
QUERIES = ["capital of Germany", "¿Cuál es la capital de España?", "日本の首都", "how do plants use light"]


def main(argv: list[str] | None = None) -> int:
    """Index the corpus once per head, then print the top hits of each query."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default="models/toy-onnx", help="folder written by `colbert-onnx export`")
    parser.add_argument("--url", default=None, help="Qdrant server URL; default: local in-process mode")
    parser.add_argument("--dims", type=int, nargs="+", default=None, help="heads to index (default: all)")
    parser.add_argument("--query", action="append", default=None, help="query text (repeatable)")
    parser.add_argument("--limit", type=int, default=3)
    parser.add_argument("--prefix", default="colbert-onnx-demo", help="collection name prefix (+ '-<dim>')")
    parser.add_argument("--pool-factor", type=int, default=1, help="token pooling of stored documents")
    args = parser.parse_args(argv)

    from qdrant_client import QdrantClient

    client = QdrantClient(url=args.url) if args.url else QdrantClient(":memory:")
    dims = args.dims or ColbertEncoder(args.model_dir).folder.dims
    for dim in dims:
        encoder = ColbertEncoder(args.model_dir, dim=dim)
        collection = f"{args.prefix}-{dim}"
        index_documents(client, collection, encoder, CORPUS, pool_factor=args.pool_factor)
        print(f"== collection {collection}: {len(CORPUS)} documents, {dim}-dim multi-vectors (MAX_SIM)")
        for query in args.query or QUERIES:
            print(f"  query: {query}")
            for hit in search(client, collection, encoder, query, limit=args.limit):
                print(f"    {hit['score']:8.3f}  [{hit['id']}] {hit['payload']['text']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
