"""MUVERA fixed-dimensional encodings (runtime/muvera.py): fastembed's definition, the output kind everywhere."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from colbert_onnx import ColbertEncoder, maxsim
from colbert_onnx.cli import main
from colbert_onnx.compact import canonical_output, check_output_kind
from colbert_onnx.errors import InvalidInputError
from colbert_onnx.examples import BERLIN_DOCUMENTS, BERLIN_QUERY
from colbert_onnx.muvera import Muvera, MuveraSpec, parse_output

# (dim, k_sim, dim_proj, r_reps, seed): fastembed's defaults, no projection (dim_proj == dim), small ones.
SPECS = [(128, 5, 16, 20, 42), (64, 3, 64, 4, 7), (96, 4, 8, 10, 0), (128, 1, 128, 3, 5)]


def unit_vectors(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    v = rng.normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


@pytest.mark.parametrize("dim,k_sim,dim_proj,r_reps,seed", SPECS)
def test_encodings_equal_fastembeds_bit_for_bit(dim, k_sim, dim_proj, r_reps, seed) -> None:
    """Documents (bucket means, empty buckets filled) and queries (sums) as fastembed.postprocess.Muvera computes
    them in float64, for 1 vector (most buckets empty) up to 300 (all occupied)."""
    fastembed = pytest.importorskip("fastembed.postprocess", reason="fastembed is in the [peers] extra")
    theirs = fastembed.Muvera(dim, k_sim=k_sim, dim_proj=dim_proj, r_reps=r_reps, random_seed=seed)
    ours = Muvera(dim, MuveraSpec(k_sim, dim_proj, r_reps, seed))
    rng = np.random.default_rng(seed)
    texts = [unit_vectors(rng, n, dim) for n in (1, 3, 40, 300)]
    assert ours.fde_dim == theirs.embedding_size
    docs = ours.encode_documents(texts, dtype=np.float64)
    queries = ours.encode_queries(texts, dtype=np.float64)
    np.testing.assert_array_equal(docs, np.stack([theirs.process_document(t) for t in texts]))
    np.testing.assert_array_equal(queries, np.stack([theirs.process_query(t) for t in texts]))


def test_default_output_is_float32_of_the_float64_encoding() -> None:
    rng = np.random.default_rng(0)
    texts = [unit_vectors(rng, 20, 128)]
    muvera = Muvera(128)
    assert muvera.encode_documents(texts).dtype == np.float32
    np.testing.assert_array_equal(muvera.encode_documents(texts), muvera.encode_documents(texts, np.float64)
                                  .astype(np.float32))


def test_fde_dot_products_rank_like_maxsim() -> None:
    """The point of MUVERA: query·document FDE approximates MaxSim. Documents made of clustered token vectors and
    queries that are noisy copies of some of a document's tokens: the FDE ranking finds each query's document."""
    rng = np.random.default_rng(3)
    centres = unit_vectors(rng, 300, 64)
    docs = []
    for _ in range(200):
        tokens = centres[rng.choice(300, size=30)] + 0.3 * rng.normal(size=(30, 64)).astype(np.float32)
        docs.append((tokens / np.linalg.norm(tokens, axis=1, keepdims=True)).astype(np.float32))
    queries = [docs[i][rng.choice(30, size=8)] + 0.1 * rng.normal(size=(8, 64)).astype(np.float32)
               for i in range(50)]
    muvera = Muvera(64, MuveraSpec(k_sim=4, dim_proj=16, r_reps=20))
    fde_scores = muvera.encode_queries(queries) @ muvera.encode_documents(docs).T
    exact = np.stack([maxsim(q, docs) for q in queries])
    assert (exact.argmax(axis=1) == np.arange(50)).all()
    top10 = np.argsort(-fde_scores, axis=1)[:, :10]
    assert np.mean([i in row for i, row in enumerate(top10)]) >= 0.9
    correlation = [np.corrcoef(f, e)[0, 1] for f, e in zip(fde_scores, exact, strict=True)]
    assert np.median(correlation) > 0.3  # measured 0.50: the rest of the corpus is noise around each query


@pytest.mark.parametrize(
    "output,spec",
    [
        ("muvera", MuveraSpec()),
        ("muvera:k_sim=3", MuveraSpec(k_sim=3)),
        ("muvera: dim_proj=8 , r_reps=4,seed=1,k_sim=2", MuveraSpec(2, 8, 4, 1)),
    ],
)
def test_output_strings_name_the_parameters(output, spec) -> None:
    assert parse_output(output) == spec
    assert check_output_kind(output) == output
    assert parse_output(canonical_output(output)) == spec


@pytest.mark.parametrize(
    "output,message",
    [
        ("muvera:k=3", "bad muvera parameter"),
        ("muvera:k_sim=x", "k_sim must be an int"),
        ("muvera:k_sim=0", r"k_sim must be an int in \[1, 16\]"),
        ("muvera:r_reps=2,r_reps=3", "given twice"),
        ("muvera2", "output must be one of"),
    ],
)
def test_a_bad_muvera_output_is_refused_naming_the_part(output, message) -> None:
    with pytest.raises(InvalidInputError, match=message):
        check_output_kind(output)


def test_projection_to_more_dims_than_the_vectors_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="dim_proj=16 is larger than the vectors' dim 8"):
        Muvera(8)


def test_an_empty_or_misshaped_multivector_is_refused() -> None:
    muvera = Muvera(64, MuveraSpec(dim_proj=8))
    with pytest.raises(InvalidInputError, match="item 1 has no vectors"):
        muvera.encode_documents([np.ones((2, 64), np.float32), np.zeros((0, 64), np.float32)])
    with pytest.raises(InvalidInputError, match=r"shape \(n, 64\)"):
        muvera.encode_queries([np.ones((2, 32), np.float32)])


def test_the_encoder_output_kind_encodes_its_own_vectors(toy_encoder: ColbertEncoder) -> None:
    """encode_documents / encode_queries(output="muvera:...") = Muvera over the float32 vectors of the same call."""
    output = "muvera:k_sim=3,dim_proj=8,r_reps=4"
    muvera = Muvera(128, parse_output(output))
    docs = toy_encoder.encode_documents(BERLIN_DOCUMENTS, output=output)
    queries = toy_encoder.encode_queries([BERLIN_QUERY], output=output)
    assert [d.shape for d in docs] == [(muvera.fde_dim,)] * len(BERLIN_DOCUMENTS)
    float_docs = toy_encoder.encode_documents(BERLIN_DOCUMENTS)
    np.testing.assert_array_equal(np.stack(docs), muvera.encode_documents(float_docs))
    np.testing.assert_array_equal(np.stack(queries), muvera.encode_queries(toy_encoder.encode_queries([BERLIN_QUERY])))


def test_pooling_happens_before_the_encoding(toy_encoder: ColbertEncoder) -> None:
    pooled = toy_encoder.encode_documents(BERLIN_DOCUMENTS, pool_factor=2)
    got = toy_encoder.encode_documents(BERLIN_DOCUMENTS, pool_factor=2, output="muvera")
    np.testing.assert_array_equal(np.stack(got), Muvera(128).encode_documents(pooled))


def test_the_cli_prints_one_encoding_per_text(toy_model_dir: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(f"{BERLIN_QUERY}\n"))
    spec = "muvera:k_sim=2,dim_proj=8,r_reps=3"
    assert main(["encode", str(toy_model_dir), "--input-type", "query", "--output", spec, "--decimals", "8"]) == 0
    (line,) = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    expected = ColbertEncoder(toy_model_dir).encode_queries([BERLIN_QUERY], output=spec)[0]
    np.testing.assert_allclose(line["embeddings"], expected, atol=1e-7)


def test_the_cli_refuses_a_bad_spec(toy_model_dir: Path, capsys) -> None:
    with pytest.raises(SystemExit):
        main(["encode", str(toy_model_dir), "--output", "muvera:k_sim=99"])
    assert "k_sim must be an int in [1, 16]" in capsys.readouterr().err


def test_parquet_holds_one_fixed_size_vector_per_row_and_the_full_spec(toy_encoder: ColbertEncoder, tmp_path) -> None:
    pa = pytest.importorskip("pyarrow", reason="colbert_onnx.arrow needs the [arrow] extra")
    from colbert_onnx import arrow

    table = pa.table({"text": BERLIN_DOCUMENTS, "id": list(range(len(BERLIN_DOCUMENTS)))})
    out = arrow.encode_table(toy_encoder, table, output="muvera:k_sim=3")
    assert out.schema.field("vectors").type == pa.list_(pa.field("element", pa.float32(), nullable=False), 2560)
    assert "n_tokens" not in out.column_names
    assert arrow.read_metadata(out)["output"] == "muvera:k_sim=3,dim_proj=16,r_reps=20,seed=42"
    arrow.write_parquet(out, tmp_path / "fde.parquet")
    back = arrow.read_shards(tmp_path)
    expected = toy_encoder.encode_documents(BERLIN_DOCUMENTS, output="muvera:k_sim=3")
    np.testing.assert_array_equal(np.stack(arrow.to_documents(back)), np.stack(expected))
    with pytest.raises(InvalidInputError, match="one encoding per row"):
        arrow.to_packed(back)


def test_the_qdrant_example_reranks_muvera_candidates_like_rerank(toy_model_dir: Path, capsys) -> None:
    """With every document a candidate, MaxSim over the MUVERA candidates is exactly encoder.rerank's order."""
    pytest.importorskip("qdrant_client", reason="the example needs the [qdrant] extra")
    import importlib.util

    spec = importlib.util.spec_from_file_location("qdrant_muvera", Path(__file__).parents[1] / "examples" /
                                                  "qdrant_muvera.py")
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    query = example.QUERIES[0]
    argv = ["--model-dir", str(toy_model_dir), "--query", query, "--candidates", str(len(example.CORPUS)),
            "--limit", "3"]
    assert example.main(argv) == 0
    printed = [line.split(maxsplit=1)[1] for line in capsys.readouterr().out.splitlines()[2:]]
    expected = ColbertEncoder(toy_model_dir).rerank(query, example.CORPUS, top_n=3)
    assert printed == [hit["document"] for hit in expected]


def test_the_server_gives_muvera_encodings_with_its_spec(toy_model_dir: Path) -> None:
    pytest.importorskip("fastapi", reason="the HTTP server needs the [server] extra")
    import httpx
    from test_server import running_server

    from colbert_onnx.server import ServerConfig

    spec = "muvera:k_sim=3,dim_proj=8,r_reps=4"
    with running_server(ServerConfig(model_dir=toy_model_dir, dims=(128,), muvera=spec)) as base:
        bodies = {kind: {"input": BERLIN_DOCUMENTS[:2], "input_type": kind, "embedding_type": "muvera"}
                  for kind in ("query", "document")}
        got = {kind: httpx.post(f"{base}/v1/multi-vector", json=body, timeout=60).json()
               for kind, body in bodies.items()}
    encoder = ColbertEncoder(toy_model_dir)
    want = {"query": encoder.encode_queries(BERLIN_DOCUMENTS[:2], output=spec),
            "document": encoder.encode_documents(BERLIN_DOCUMENTS[:2], output=spec)}
    for kind in want:
        np.testing.assert_allclose([d["embeddings"] for d in got[kind]["data"]], want[kind], atol=1e-5)


def test_a_server_muvera_spec_that_is_not_muvera_is_refused(toy_model_dir: Path) -> None:
    from colbert_onnx.server import ServerConfig

    with pytest.raises(ValueError, match="muvera must be"):
        ServerConfig(model_dir=toy_model_dir, muvera="float32")
    with pytest.raises(InvalidInputError, match="k_sim"):
        ServerConfig(model_dir=toy_model_dir, muvera="muvera:k_sim=0")
