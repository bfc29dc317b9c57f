"""A corpus end to end on Ray: text Parquet -> Ray Data actors -> multivector Parquet -> Qdrant (MAX_SIM).

    make demo                                   # creates models/toy-onnx
    pip install -e '.[arrow,ray,qdrant]'
    python examples/ray_corpus.py               # a local Ray cluster on 127.0.0.1, 2 actors
    python examples/ray_corpus.py --address ray://head:10001 --actors 8 --out s3-or-shared-folder/

The Ray workers write the multivector shards themselves (one Parquet file per block, settings in
each file's metadata); the driver then reads them back with ``read_shards`` (which refuses shards
encoded with other settings), loads them into a Qdrant multivector collection and checks that a
query ranks the documents exactly as ``ColbertEncoder.rerank`` does.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import ray

from colbert_onnx import ColbertEncoder
from colbert_onnx import arrow as ca
from colbert_onnx import ray as cr
from colbert_onnx.examples import BERLIN_DOCUMENTS, BERLIN_QUERY


def corpus() -> list[str]:
    """The Berlin documents plus the multilingual sentences the exporter ships, a few hundred texts."""
    sentences = Path(__file__).resolve().parent.parent / "export" / "data" / "multilingual.txt"
    extra = [s for s in sentences.read_text(encoding="utf-8").splitlines() if s.strip()]
    return BERLIN_DOCUMENTS + extra + [f"{a} {b}" for a, b in zip(extra, extra[1:], strict=False)]


def main(argv: list[str] | None = None) -> int:
    """Encode the corpus on Ray, load it into Qdrant, compare one query's ranking with rerank."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", default="models/toy-onnx", help="folder written by `colbert-onnx export`")
    parser.add_argument("--address", default=None, help="Ray cluster address; default: a local loopback cluster")
    parser.add_argument("--actors", type=int, default=2)
    parser.add_argument("--out", default=None, help="folder for the shards (default: a temporary folder)")
    parser.add_argument("--output", default="float16", choices=["float16", "float32"])
    parser.add_argument("--query", default=BERLIN_QUERY)
    args = parser.parse_args(argv)

    from qdrant_client import QdrantClient

    from colbert_onnx.qdrant import ensure_collection, search, to_points

    texts = corpus()
    work = Path(tempfile.mkdtemp(prefix="ray-corpus-"))
    out = Path(args.out) if args.out else work / "vectors"
    pq.write_table(pa.table({"id": list(range(len(texts))), "text": texts}), work / "texts.parquet")

    if args.address:
        ray.init(address=args.address)
    else:
        cr.init_local_cluster(num_cpus=2, object_store_memory=256 * 2**20, log_to_driver=False)
    try:
        ds = ray.data.read_parquet(str(work / "texts.parquet"))
        encoded = cr.encode_documents(ds, args.model_dir, actors=args.actors, batch_size=64, output=args.output)
        encoded.write_parquet(str(out), **ca.parquet_options(args.output, ["id"]))
    finally:
        ray.shutdown()

    table = ca.read_shards(out, expect={"output": args.output})
    meta = ca.read_metadata(table)
    print(f"{table.num_rows} documents, {sum(table['n_tokens'].to_pylist())} vectors of dim {meta['dim']} "
          f"({meta['output']}) in {len(list(out.glob('*.parquet')))} shards under {out}")

    client = QdrantClient(":memory:")
    ensure_collection(client, "corpus", meta["dim"])
    ids, documents = table["id"].to_pylist(), ca.to_documents(table)
    for start in range(0, len(ids), 128):
        client.upsert("corpus", points=to_points(documents[start:start + 128], ids[start:start + 128]), wait=True)

    encoder = ColbertEncoder(args.model_dir, dim=meta["dim"])
    hits = search(client, "corpus", encoder, args.query, limit=5)
    reranked = encoder.rerank(args.query, texts, top_n=5)
    print(f"query: {args.query}")
    for hit in hits:
        print(f"  {hit['score']:8.3f}  {texts[hit['id']][:70]}")
    same = [h["id"] for h in hits] == [r["index"] for r in reranked]
    print("same top 5 as ColbertEncoder.rerank:", same)
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
