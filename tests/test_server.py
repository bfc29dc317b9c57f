"""HTTP server (issue 5): Jina-compatible endpoints over real loopback HTTP, limits, auth, batching, soak."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="the HTTP server needs the [server] extra (pip install '.[server]')")
pytest.importorskip("uvicorn", reason="the HTTP server needs the [server] extra (pip install '.[server]')")
httpx = pytest.importorskip("httpx", reason="the server tests talk HTTP with httpx ([server] extra)")

from live_server import free_port, http_client, rss_kib, running_server, server_process  # noqa: E402, F401

from colbert_onnx import ColbertEncoder, EncoderConfig  # noqa: E402
from colbert_onnx.examples import BERLIN_DOCUMENTS as DOCUMENTS  # noqa: E402
from colbert_onnx.examples import BERLIN_QUERY as QUERY  # noqa: E402
from colbert_onnx.server import ServerConfig, create_app  # noqa: E402
from colbert_onnx.server.batching import MicroBatcher, Overloaded  # noqa: E402
from colbert_onnx.tokenization import TokenizedBatch  # noqa: E402

ATOL = 1e-5  # batching with other requests changes padding, hence float noise
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def base_url(toy_model_dir: Path) -> Iterator[str]:
    with running_server(ServerConfig(model_dir=toy_model_dir)) as base:
        yield base


@pytest.fixture(scope="module")
def client(base_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def encoders(toy_model_dir: Path) -> dict[int, ColbertEncoder]:
    return {dim: ColbertEncoder(toy_model_dir, dim=dim) for dim in (128, 96, 64)}


def assert_vectors_equal(got: list, expected: np.ndarray) -> None:
    arr = np.asarray(got, dtype=np.float32)
    assert arr.shape == expected.shape
    np.testing.assert_allclose(arr, expected, atol=ATOL, rtol=0)


# ---------------------------------------------------------------- endpoints


def test_health_ready_and_models_describe_the_served_model(client: httpx.Client) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    models = client.get("/v1/models").json()
    assert models["object"] == "list"
    (model,) = models["data"]
    assert model["id"] == "jina-colbert-v2" and model["object"] == "model"
    assert model["dimensions"] == [128, 96, 64]


def test_openapi_documents_the_jina_endpoints(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    for path in ("/v1/multi-vector", "/v1/rerank", "/v1/models", "/health", "/ready"):
        assert path in spec["paths"]
    props = spec["components"]["schemas"]["MultiVectorRequest"]["properties"]
    assert {"model", "input", "input_type", "embedding_type", "dimensions"} <= set(props)


@pytest.mark.parametrize("dim", [128, 96, 64])
def test_multi_vector_documents_equal_direct_encoder(client: httpx.Client, encoders, dim: int) -> None:
    r = client.post(
        "/v1/multi-vector",
        json={"model": "jina-colbert-v2", "input": DOCUMENTS, "input_type": "document", "dimensions": dim},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "jina-colbert-v2" and body["object"] == "list"
    encoder = encoders[dim]
    assert body["usage"]["total_tokens"] == encoder.preprocessor.documents(DOCUMENTS).total_tokens
    expected = encoder.encode_documents(DOCUMENTS)
    assert [d["index"] for d in body["data"]] == list(range(len(DOCUMENTS)))
    for item, vectors in zip(body["data"], expected, strict=True):
        assert item["object"] == "embeddings"
        assert_vectors_equal(item["embeddings"], vectors)


def test_multi_vector_defaults_are_document_float_128(client: httpx.Client, encoders) -> None:
    body = client.post("/v1/multi-vector", json={"input": DOCUMENTS[:2]}).json()
    for item, vectors in zip(body["data"], encoders[128].encode_documents(DOCUMENTS[:2]), strict=True):
        assert_vectors_equal(item["embeddings"], vectors)


def test_multi_vector_queries_return_32_vectors_equal_direct_encoder(client: httpx.Client, encoders) -> None:
    r = client.post("/v1/multi-vector", json={"input": [QUERY, "Einwohner Berlin"], "input_type": "query"})
    assert r.status_code == 200, r.text
    expected = encoders[128].encode_queries([QUERY, "Einwohner Berlin"])
    for item, vectors in zip(r.json()["data"], expected, strict=True):
        assert len(item["embeddings"]) == 32
        assert_vectors_equal(item["embeddings"], vectors)


def test_multi_vector_accepts_a_single_string_and_text_objects(client: httpx.Client, encoders) -> None:
    single = client.post("/v1/multi-vector", json={"input": DOCUMENTS[0]}).json()
    objects = client.post("/v1/multi-vector", json={"input": [{"text": DOCUMENTS[0]}]}).json()
    (expected,) = encoders[128].encode_documents([DOCUMENTS[0]])
    assert len(single["data"]) == 1 and len(objects["data"]) == 1
    assert_vectors_equal(single["data"][0]["embeddings"], expected)
    assert_vectors_equal(objects["data"][0]["embeddings"], expected)


def test_base64_is_little_endian_float32_per_vector(client: httpx.Client, encoders) -> None:
    body = client.post("/v1/multi-vector", json={"input": DOCUMENTS[:3], "embedding_type": "base64"}).json()
    for item, vectors in zip(body["data"], encoders[128].encode_documents(DOCUMENTS[:3]), strict=True):
        decoded = np.stack([np.frombuffer(base64.b64decode(s), dtype="<f4") for s in item["embeddings"]])
        assert_vectors_equal(decoded, vectors)


@pytest.mark.parametrize("dim", [128, 64])
def test_binary_and_ubinary_pack_sign_bits(client: httpx.Client, encoders, dim: int) -> None:
    request = {"input": DOCUMENTS[:2], "dimensions": dim, "input_type": "document"}
    ub = client.post("/v1/multi-vector", json={**request, "embedding_type": "ubinary"}).json()
    b = client.post("/v1/multi-vector", json={**request, "embedding_type": "binary"}).json()
    expected = encoders[dim].encode_documents(DOCUMENTS[:2])
    for item_u, item_b, vectors in zip(ub["data"], b["data"], expected, strict=True):
        packed_u = np.asarray(item_u["embeddings"])
        packed_b = np.asarray(item_b["embeddings"])
        assert packed_u.shape == (vectors.shape[0], dim // 8)
        assert packed_u.min() >= 0 and packed_u.max() <= 255
        assert packed_b.min() >= -128 and packed_b.max() <= 127
        np.testing.assert_array_equal(packed_b, packed_u - 128)  # binary = ubinary offset into int8
        bits = np.unpackbits(packed_u.astype(np.uint8), axis=-1)
        clear = np.abs(vectors) > 1e-4  # signs of ~0 values may flip with batch padding
        np.testing.assert_array_equal(bits[clear], (vectors > 0)[clear])


def test_documents_are_truncated_at_the_model_max_length(toy_model_dir: Path) -> None:
    long_doc = " ".join(f"word{i}" for i in range(400))
    with running_server(ServerConfig(model_dir=toy_model_dir, encoder=EncoderConfig(document_max_length=24))) as base:
        body = httpx.post(f"{base}/v1/multi-vector", json={"input": [long_doc]}, timeout=60).json()
    (expected,) = ColbertEncoder(toy_model_dir, document_max_length=24).encode_documents([long_doc])
    assert len(body["data"][0]["embeddings"]) <= 24
    assert body["usage"]["total_tokens"] == 24
    assert_vectors_equal(body["data"][0]["embeddings"], expected)


def test_truncate_false_refuses_a_text_the_server_would_cut_naming_it(toy_model_dir: Path) -> None:
    long_doc = " ".join(f"word{i}" for i in range(400))
    with running_server(ServerConfig(model_dir=toy_model_dir, encoder=EncoderConfig(document_max_length=24))) as base:
        refused = {kind: httpx.post(f"{base}/v1/multi-vector", timeout=60, json={
            "input": ["short", long_doc], "input_type": kind, "truncate": False}) for kind in ("document", "query")}
        cut = httpx.post(f"{base}/v1/multi-vector", json={"input": [long_doc], "truncate": True}, timeout=60)
        fits = httpx.post(f"{base}/v1/multi-vector", json={"input": ["short"], "truncate": False}, timeout=60)
    for kind, limit, most in (("document", "document_max_length", 24), ("query", "query_max_length", 32)):
        body = refused[kind].json()
        assert refused[kind].status_code == 413 and body["limit"] == limit and "input[1]" in body["detail"], body
        assert body["value"] > body["max"] == most
    assert cut.status_code == 200 and cut.json()["usage"]["total_tokens"] == 24
    assert fits.status_code == 200


def test_truncate_false_is_honored_where_documents_run_whole_in_windows(toy_model_dir: Path) -> None:
    long_doc = " ".join(f"word{i}" for i in range(100))
    options = EncoderConfig(document_max_length=24, long_documents="windows")
    with running_server(ServerConfig(model_dir=toy_model_dir, encoder=options)) as base:
        r = httpx.post(f"{base}/v1/multi-vector", json={"input": [long_doc], "truncate": False}, timeout=60)
    assert r.status_code == 200 and r.json()["usage"]["total_tokens"] > 24


def test_every_encoder_option_reaches_the_server(toy_model_dir: Path) -> None:
    long_doc = " ".join(f"word{i}" for i in range(200))
    options = EncoderConfig(document_max_length=24, long_documents="windows", window_stride=5, batch_size=2,
                            io_binding=True)
    with running_server(ServerConfig(model_dir=toy_model_dir, encoder=options)) as base:
        body = httpx.post(f"{base}/v1/multi-vector", json={"input": [long_doc]}, timeout=60).json()
    (expected,) = ColbertEncoder(toy_model_dir, options).encode_documents([long_doc])
    assert len(expected) > 24  # windows: every token, not the first 24
    assert_vectors_equal(body["data"][0]["embeddings"], expected)


def test_the_configured_dim_is_the_default_head_and_must_be_served(toy_model_dir: Path) -> None:
    from colbert_onnx import UnsupportedDimError

    with running_server(ServerConfig(model_dir=toy_model_dir, encoder=EncoderConfig(dim=64))) as base:
        body = httpx.post(f"{base}/v1/multi-vector", json={"input": ["Berlin"]}, timeout=60).json()
        models = httpx.get(f"{base}/v1/models").json()
    assert len(body["data"][0]["embeddings"][0]) == 64 and models["data"][0]["default_dimensions"] == 64
    with pytest.raises(UnsupportedDimError, match="dim 64 is not served here"):
        create_app(ServerConfig(model_dir=toy_model_dir, dims=(128, 96), encoder=EncoderConfig(dim=64)))


def test_without_a_configured_dim_the_largest_served_head_is_the_default(fewer_heads_model_dirs) -> None:
    from colbert_onnx import UnsupportedDimError

    folder = fewer_heads_model_dirs[(96, 64)]
    with running_server(ServerConfig(model_dir=folder)) as base:
        body = httpx.post(f"{base}/v1/multi-vector", json={"input": ["Berlin"]}, timeout=60).json()
        models = httpx.get(f"{base}/v1/models").json()
    assert len(body["data"][0]["embeddings"][0]) == 96 and models["data"][0]["default_dimensions"] == 96
    with pytest.raises(UnsupportedDimError, match="dim 128 is not served here"):
        create_app(ServerConfig(model_dir=folder, encoder=EncoderConfig(dim=128)))


class CountingTokenizer:
    """Delegates to a real tokenizer and counts the texts it encodes."""

    def __init__(self, inner) -> None:
        self.inner, self.texts = inner, 0

    def encode_batch(self, texts, **kwargs):
        self.texts += len(texts)
        return self.inner.encode_batch(texts, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_a_request_is_tokenized_once(toy_model_dir: Path) -> None:
    encoder = ColbertEncoder(toy_model_dir)
    counter = CountingTokenizer(encoder.preprocessor.tokenizer)
    encoder.preprocessor.tokenizer = counter
    config = ServerConfig(model_dir=toy_model_dir, dims=(128,))
    with running_server(config, encoder_factory=lambda dim: encoder) as base:
        counter.texts = 0
        vectors = httpx.post(f"{base}/v1/multi-vector", json={"input": DOCUMENTS[:3]}, timeout=60)
        after_vectors = counter.texts
        ranked = httpx.post(f"{base}/v1/rerank", json={"query": QUERY, "documents": DOCUMENTS}, timeout=60)
    assert vectors.status_code == 200 and ranked.status_code == 200
    assert after_vectors == 3, "each text of /v1/multi-vector is tokenized exactly once"
    assert counter.texts - after_vectors == len(DOCUMENTS) + 1, "the query and each document once"


def test_usage_counts_the_framed_ids_the_model_runs(client: httpx.Client) -> None:
    body = client.post("/v1/multi-vector", json={"input": ["", "   \n", "\t"]}).json()
    assert body["usage"]["total_tokens"] == 9  # <s> [DocumentMarker] </s> each: whitespace is empty text


def test_rerank_equals_direct_encoder_rerank(client: httpx.Client, encoders) -> None:
    r = client.post("/v1/rerank", json={"model": "jina-colbert-v2", "query": QUERY, "documents": DOCUMENTS})
    assert r.status_code == 200, r.text
    body = r.json()
    expected = encoders[128].rerank(QUERY, DOCUMENTS)
    assert body["model"] == "jina-colbert-v2"
    assert [h["index"] for h in body["results"]] == [h["index"] for h in expected]
    for got, want in zip(body["results"], expected, strict=True):
        assert got["relevance_score"] == pytest.approx(want["relevance_score"], abs=1e-4)
        assert got["document"] == {"text": want["document"]}
    scores = [h["relevance_score"] for h in body["results"]]
    assert scores == sorted(scores, reverse=True)
    pre = encoders[128].preprocessor
    q_tokens = min(len(pre.tokenizer.encode(QUERY, add_special_tokens=False).ids) + 3, 32)  # framed, truncated
    assert body["usage"]["total_tokens"] == q_tokens + pre.documents(DOCUMENTS).total_tokens


def test_rerank_top_n_return_documents_and_text_objects(client: httpx.Client, encoders) -> None:
    docs = [{"text": d} for d in DOCUMENTS]
    body = client.post(
        "/v1/rerank", json={"query": QUERY, "documents": docs, "top_n": 3, "return_documents": False}
    ).json()
    expected = encoders[128].rerank(QUERY, DOCUMENTS, top_n=3)
    assert [h["index"] for h in body["results"]] == [h["index"] for h in expected]
    assert all("document" not in h for h in body["results"])
    big = client.post("/v1/rerank", json={"query": QUERY, "documents": DOCUMENTS[:2], "top_n": 50}).json()
    assert len(big["results"]) == 2


BAD_REQUESTS = [
    ("/v1/multi-vector", b"{not json", 400, "malformed JSON"),
    ("/v1/multi-vector", b"[1, 2]", 422, "body"),
    ("/v1/multi-vector", {"input": [1, 2]}, 422, "input"),
    ("/v1/multi-vector", {"input": None}, 422, "input"),
    ("/v1/multi-vector", {}, 422, "input"),
    ("/v1/multi-vector", {"input": []}, 422, "input is empty"),
    ("/v1/multi-vector", {"input": ["a"], "dimensions": 100}, 422, "dimensions=100 is not served"),
    ("/v1/multi-vector", {"input": ["a"], "dimensions": "wide"}, 422, "dimensions"),
    ("/v1/multi-vector", {"input": ["a"], "input_type": "passage"}, 422, "input_type"),
    ("/v1/multi-vector", {"input": ["a"], "embedding_type": "int4"}, 422, "embedding_type"),
    ("/v1/multi-vector", {"input": ["a"], "encoding_format": "int4"}, 422, "encoding_format"),
    ("/v1/multi-vector", {"input": ["a"], "model": "other-model"}, 422, "served: jina-colbert-v2"),
    ("/v1/rerank", {"query": "q", "documents": ["a"], "model": "jina-reranker-v3"}, 422, "served: jina-colbert-v2"),
    ("/v1/rerank", {"query": QUERY}, 422, "documents"),
    ("/v1/rerank", {"documents": ["a"]}, 422, "query"),
    ("/v1/rerank", {"query": 3, "documents": ["a"]}, 422, "query"),
    ("/v1/rerank", {"query": "q", "documents": "a"}, 422, "documents"),
    ("/v1/rerank", {"query": "q", "documents": [None]}, 422, "documents"),
    ("/v1/rerank", {"query": "q", "documents": ["a"], "top_n": -1}, 422, "top_n"),
    ("/v1/rerank", {"query": "q", "documents": ["a"], "truncate_prompt_tokens": -2}, 422, "truncate_prompt_tokens"),
    ("/v1/rerank", {"query": "q", "documents": ["a"], "return_documents": "yes"}, 422, "return_documents"),
]


@pytest.mark.parametrize(("path", "payload", "status", "message"), BAD_REQUESTS)
def test_bad_requests_get_a_clear_4xx_never_a_500(client: httpx.Client, path, payload, status, message) -> None:
    if isinstance(payload, bytes):
        r = client.post(path, content=payload, headers={"content-type": "application/json"})
    else:
        r = client.post(path, json=payload)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    detail = r.json()["detail"]
    assert isinstance(detail, str) and message in detail


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "text/json",
                                          "application/jsonx", "application/json-seq", "text/json; charset=utf-8",
                                          "application/vnd.api+json", "application/json; charset=utf-8", ""])
def test_a_json_body_is_parsed_whatever_content_type_the_client_declared(client: httpx.Client,
                                                                         content_type: str) -> None:
    """curl -d sends form; some clients say text/json: the API only speaks JSON and parses it as such."""
    r = client.post("/v1/multi-vector", content=json.dumps({"input": "hi"}), headers={"content-type": content_type})
    assert r.status_code == 200 and len(r.json()["data"]) == 1, r.text


def test_a_json_body_with_two_content_types_is_parsed_as_json(client: httpx.Client) -> None:
    headers = [("content-type", "text/plain"), ("content-type", "application/json")]
    r = client.post("/v1/multi-vector", content=json.dumps({"input": "hi"}), headers=headers)
    assert r.status_code == 200 and len(r.json()["data"]) == 1, r.text


def test_empty_documents_rerank_returns_no_results(client: httpx.Client) -> None:
    r = client.post("/v1/rerank", json={"query": QUERY, "documents": []})
    assert r.status_code == 200 and r.json()["results"] == []


# ---------------------------------------------------------------- Jina/OpenAI drop-in: names, task, encoding_format


def test_a_task_naming_a_query_gives_the_query_vectors(client: httpx.Client, encoders) -> None:
    r = client.post("/v1/multi-vector", json={"input": [QUERY], "task": "retrieval.query"})
    assert r.status_code == 200, r.text
    (item,) = r.json()["data"]
    assert_vectors_equal(item["embeddings"], encoders[128].encode_queries([QUERY])[0])


def test_a_task_naming_a_passage_gives_the_document_vectors(client: httpx.Client, encoders) -> None:
    r = client.post("/v1/multi-vector", json={"input": DOCUMENTS[:2], "task": "retrieval.passage"})
    assert r.status_code == 200, r.text
    for item, vectors in zip(r.json()["data"], encoders[128].encode_documents(DOCUMENTS[:2]), strict=True):
        assert_vectors_equal(item["embeddings"], vectors)


def test_an_explicit_input_type_wins_over_the_task(client: httpx.Client, encoders) -> None:
    r = client.post("/v1/multi-vector", json={"input": [QUERY], "task": "retrieval.passage", "input_type": "query"})
    assert r.status_code == 200, r.text
    assert_vectors_equal(r.json()["data"][0]["embeddings"], encoders[128].encode_queries([QUERY])[0])


@pytest.mark.parametrize("task", ["text-matching", "retrieval.document", "classification", ""])
def test_any_other_task_gets_422_naming_the_accepted_ones(client: httpx.Client, task: str) -> None:
    r = client.post("/v1/multi-vector", json={"input": ["a"], "task": task, "input_type": "document"})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert repr(task) in detail and "retrieval.query" in detail and "retrieval.passage" in detail


@pytest.mark.parametrize("field", ["encoding_format", "encoding_type"])
def test_encoding_format_is_an_alias_of_embedding_type(client: httpx.Client, encoders, field: str) -> None:
    body = client.post("/v1/multi-vector", json={"input": DOCUMENTS[:2], field: "base64"}).json()
    for item, vectors in zip(body["data"], encoders[128].encode_documents(DOCUMENTS[:2]), strict=True):
        assert all(isinstance(s, str) for s in item["embeddings"])
        decoded = np.stack([np.frombuffer(base64.b64decode(s), dtype="<f4") for s in item["embeddings"]])
        assert_vectors_equal(decoded, vectors)


def test_agreeing_encoding_names_are_accepted(client: httpx.Client) -> None:
    payload = {"input": ["a"], "embedding_type": "ubinary", "encoding_format": "ubinary"}
    r = client.post("/v1/multi-vector", json=payload)
    assert r.status_code == 200, r.text
    assert all(isinstance(v, int) for row in r.json()["data"][0]["embeddings"] for v in row)


@pytest.mark.parametrize(
    "names",
    [
        {"embedding_type": "float", "encoding_format": "base64"},
        {"encoding_type": "binary", "encoding_format": "float"},
        {"embedding_type": "ubinary", "encoding_type": "binary"},
    ],
)
def test_conflicting_encoding_names_get_422_naming_both(client: httpx.Client, names: dict) -> None:
    r = client.post("/v1/multi-vector", json={"input": ["a"], **names})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert all(f"{field}={value!r}" in detail for field, value in names.items())


@pytest.mark.parametrize(
    "payload",
    [
        {"model": "jina-embeddings-v3", "input": ["a"], "task": "retrieval.query"},
        {"model": "text-embedding-3-small", "input": "a", "encoding_format": "float"},
        {},
    ],
)
def test_embeddings_endpoint_says_where_the_multi_vectors_are(client: httpx.Client, payload: dict) -> None:
    r = client.post("/v1/embeddings", json=payload)
    assert r.status_code == 404, r.text
    body = r.json()
    assert "data" not in body  # no invented pooled vector
    detail = body["detail"]
    assert "multi-vector" in detail and "POST /v1/multi-vector" in detail and '"input_type"' in detail


SERVED = ("jina-colbert-v2", "jina-reranker-v1-base-en", "jina-reranker-v2-base-multilingual", "jina-reranker-v3")


@pytest.fixture(scope="module")
def aliased_url(toy_model_dir: Path) -> Iterator[str]:
    with running_server(ServerConfig(model_dir=toy_model_dir, dims=(128,), served_model_names=SERVED)) as base:
        yield base


def test_models_lists_every_served_name(aliased_url: str) -> None:
    models = httpx.get(f"{aliased_url}/v1/models").json()["data"]
    assert [m["id"] for m in models] == list(SERVED)
    assert {m["root"] for m in models} == {"jina-colbert-v2"}


@pytest.mark.parametrize("name", SERVED)
def test_every_served_name_is_accepted_and_echoed(aliased_url: str, name: str) -> None:
    rerank = httpx.post(f"{aliased_url}/v1/rerank", json={"model": name, "query": QUERY, "documents": DOCUMENTS[:2]})
    vectors = httpx.post(f"{aliased_url}/v1/multi-vector", json={"model": name, "input": ["a"]})
    assert rerank.status_code == 200 and vectors.status_code == 200
    assert rerank.json()["model"] == name and vectors.json()["model"] == name


def test_a_request_without_model_gets_the_first_served_name(aliased_url: str) -> None:
    r = httpx.post(f"{aliased_url}/v1/rerank", json={"query": QUERY, "documents": DOCUMENTS[:2]})
    assert r.status_code == 200 and r.json()["model"] == SERVED[0]


def test_an_unknown_model_gets_422_naming_every_served_one(aliased_url: str) -> None:
    r = httpx.post(f"{aliased_url}/v1/rerank", json={"model": "jina-reranker-m0", "query": "q", "documents": ["a"]})
    assert r.status_code == 422
    assert "'jina-reranker-m0'" in r.json()["detail"] and ", ".join(SERVED) in r.json()["detail"]


def serve_config(*argv: str) -> ServerConfig:
    from colbert_onnx.cli import build_parser
    from colbert_onnx.server.options import config_from_args

    return config_from_args(build_parser().parse_args(["serve", "some/dir", *argv]))


def test_served_model_name_takes_several_names_as_vllm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLBERT_ONNX_SERVED_MODEL_NAME", raising=False)
    config = serve_config("--served-model-name", "a", "b,c", "--port", "9000")
    assert config.model_names("jina-colbert-v2") == ("a", "b", "c")
    assert serve_config().model_names("jina-colbert-v2") == ("jina-colbert-v2",)  # the default: one name


@pytest.mark.parametrize("port", ["99999", "65536", "0", "-1", "http"])
def test_a_port_outside_1_to_65535_is_refused_before_serving(port: str, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        serve_config("--port", port)
    assert exc.value.code == 2 and "--port" in capsys.readouterr().err


def test_served_model_names_come_from_the_environment_when_no_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLBERT_ONNX_SERVED_MODEL_NAME", "jina-colbert-v2, jina-reranker-v3")
    assert serve_config().model_names("m") == ("jina-colbert-v2", "jina-reranker-v3")
    assert serve_config("--served-model-name", "x").model_names("m") == ("x",)
    assert serve_config("--model-name", "y").model_names("m") == ("y",)


def test_a_bad_served_model_name_variable_is_refused_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLBERT_ONNX_SERVED_MODEL_NAME", "a,,b")
    with pytest.raises(ValueError, match="COLBERT_ONNX_SERVED_MODEL_NAME.*non-empty"):
        serve_config()


def test_model_name_is_the_one_name_alias_of_served_model_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLBERT_ONNX_SERVED_MODEL_NAME", raising=False)
    assert serve_config("--model-name", "mine").model_names("jina-colbert-v2") == ("mine",)
    with pytest.raises(ValueError, match="not both"):
        serve_config("--model-name", "mine", "--served-model-name", "a")


@pytest.mark.parametrize(("names", "message"), [(("a", "a"), "more than once"), (("a", " "), "non-empty")])
def test_served_model_names_refuse_repeated_or_empty_names(names: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ServerConfig(model_dir=".", served_model_names=names)


# ---------------------------------------------------------------- limits and security


@pytest.fixture(scope="module")
def limited_url(toy_model_dir: Path) -> Iterator[str]:
    config = ServerConfig(
        model_dir=toy_model_dir, max_inputs_per_request=4, max_body_bytes=4000, max_tokens_per_request=120
    )
    with running_server(config) as base:
        yield base


@pytest.mark.parametrize(
    ("path", "payload"),
    [
        ("/v1/multi-vector", {"input": ["a"] * 5}),
        ("/v1/rerank", {"query": "q", "documents": ["a"] * 5}),
        ("/v1/rerank", {"query": "q", "documents": [{"text": "a"}] * 5}),
    ],
)
def test_a_list_over_max_inputs_is_a_422_naming_the_limit(limited_url: str, path, payload) -> None:
    """The schema states the limit as the list's maxItems, so a longer list is a body the schema refuses: 422, as
    for any other (a 413 reads as acceptance to schemathesis's default negative-data check)."""
    r = httpx.post(f"{limited_url}{path}", json=payload, timeout=30)
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["limit"] == "max_inputs_per_request" and body["value"] == 5 and body["max"] == 4, body
    assert "max_inputs_per_request" in body["detail"]
    (field,) = [name for name, value in payload.items() if isinstance(value, list)]
    assert _array_max_items(limited_url, path, field) == 4


def _array_max_items(base: str, path: str, field: str) -> int:
    """The served schema's maxItems of the list form of body field `field` of POST `path`."""
    spec = httpx.get(f"{base}/openapi.json", timeout=30).json()
    ref = spec["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = spec["components"]["schemas"][ref.rsplit("/", 1)[-1]]["properties"][field]
    (array,) = [s for s in schema.get("anyOf", [schema]) if s.get("type") == "array"]
    return array["maxItems"]


@pytest.mark.parametrize(
    ("path", "payload", "limit"),
    [
        ("/v1/multi-vector", {"input": ["word " * 900]}, "max_body_bytes"),
        ("/v1/multi-vector", {"input": [" ".join(f"w{i}" for i in range(200))]}, "max_tokens_per_request"),
        ("/v1/rerank", {"query": "q", "documents": ["x y z " * 50] * 2}, "max_tokens_per_request"),
    ],
)
def test_requests_over_a_limit_get_413_naming_it(limited_url: str, path, payload, limit) -> None:
    r = httpx.post(f"{limited_url}{path}", json=payload, timeout=30)
    assert r.status_code == 413, r.text
    body = r.json()
    assert body["limit"] == limit and limit in body["detail"] and body["value"] > body["max"]


def test_chunked_body_over_the_limit_gets_413(limited_url: str) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"input": ["'
        for _ in range(50):
            yield b"x" * 100
        yield b'"]}'

    r = httpx.post(f"{limited_url}/v1/multi-vector", content=chunks(), timeout=30)
    assert r.status_code == 413 and r.json()["limit"] == "max_body_bytes"


def test_requests_within_the_limits_pass(limited_url: str) -> None:
    r = httpx.post(f"{limited_url}/v1/multi-vector", json={"input": ["a", "b", "c", "d"]}, timeout=30)
    assert r.status_code == 200


def test_api_key_is_required_when_configured(toy_model_dir: Path) -> None:
    with running_server(ServerConfig(model_dir=toy_model_dir, api_key="s3cret")) as base:
        payload = {"query": QUERY, "documents": DOCUMENTS[:2]}
        missing = httpx.post(f"{base}/v1/rerank", json=payload)
        wrong = httpx.post(f"{base}/v1/rerank", json=payload, headers={"Authorization": "Bearer nope"})
        embeddings = httpx.post(f"{base}/v1/embeddings", json={"input": ["a"]})
        right = httpx.post(f"{base}/v1/rerank", json=payload, headers={"Authorization": "Bearer s3cret"})
        models = httpx.get(f"{base}/v1/models")
        health = httpx.get(f"{base}/health")
    for r in (missing, wrong, models, embeddings):
        assert r.status_code == 401 and "API key" in r.json()["detail"]
        assert r.headers["www-authenticate"] == "Bearer"
    assert right.status_code == 200
    assert health.status_code == 200  # probes stay open


def test_api_key_comes_from_the_environment_when_no_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    from colbert_onnx.cli import build_parser
    from colbert_onnx.server.options import config_from_args

    monkeypatch.setenv("COLBERT_ONNX_API_KEY", "from-env")
    args = build_parser().parse_args(["serve", "some/dir"])
    assert config_from_args(args).api_key == "from-env"
    assert args.host == "127.0.0.1"
    args = build_parser().parse_args(["serve", "some/dir", "--api-key", "flag"])
    assert config_from_args(args).api_key == "flag"


# ---------------------------------------------------------------- batching and concurrency


class BlockingEncoder:
    """Wraps a real encoder; every run waits until `release` is set (to hold a batch in flight)."""

    def __init__(self, inner: ColbertEncoder) -> None:
        self.inner = inner
        self.release = threading.Event()
        self.running = threading.Event()

    def tokenize(self, texts, kind):
        return self.inner.tokenize(texts, kind)

    def encode_ids(self, batch):
        self.running.set()
        assert self.release.wait(30), "test never released the encoder"
        return self.inner.encode_ids(batch)


def test_health_answers_and_queue_overflow_gets_429_while_a_batch_runs(toy_model_dir: Path, encoders) -> None:
    blocking = BlockingEncoder(encoders[128])
    config = ServerConfig(model_dir=toy_model_dir, dims=(128,), max_queue=1, max_batch_texts=1, retry_after_s=2)
    with running_server(config, encoder_factory=lambda dim: blocking) as base, ThreadPoolExecutor(4) as pool:
        post = lambda: httpx.post(f"{base}/v1/multi-vector", json={"input": ["a"]}, timeout=60)  # noqa: E731
        first = pool.submit(post)
        assert blocking.running.wait(10)  # first request is inside the ONNX run
        second = pool.submit(post)  # waits in the queue (size 1)
        time.sleep(0.3)
        t0 = time.monotonic()
        health = httpx.get(f"{base}/health", timeout=5)
        health_s = time.monotonic() - t0
        third = httpx.post(f"{base}/v1/multi-vector", json={"input": ["b"]}, timeout=5)
        blocking.release.set()
        assert first.result().status_code == 200 and second.result().status_code == 200
    assert health.status_code == 200 and health_s < 1.0
    assert third.status_code == 429 and third.headers["retry-after"] == "2"
    assert third.json()["limit"] == "max_queue"


def test_ready_is_503_and_requests_get_503_while_the_model_loads(toy_model_dir: Path, encoders) -> None:
    gate = threading.Event()

    def slow_factory(dim: int):
        assert gate.wait(30)
        return encoders[dim]

    with running_server(ServerConfig(model_dir=toy_model_dir), slow_factory, wait_ready=False) as base:
        ready = httpx.get(f"{base}/ready")
        health = httpx.get(f"{base}/health")
        early = httpx.post(f"{base}/v1/rerank", json={"query": "q", "documents": ["a"]})
        gate.set()
        deadline = time.monotonic() + 10
        while httpx.get(f"{base}/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        later = httpx.post(f"{base}/v1/rerank", json={"query": "q", "documents": ["a"]})
    assert ready.status_code == 503 and ready.json()["status"] == "loading"
    assert health.status_code == 200
    assert early.status_code == 503 and "retry-after" in early.headers
    assert later.status_code == 200


def test_32_concurrent_clients_get_identical_results_and_are_batched(base_url: str, encoders) -> None:
    enc = encoders[128]
    doc_sets = [DOCUMENTS[i % 8 : i % 8 + 3] or DOCUMENTS[:3] for i in range(8)]
    expected_docs = [enc.encode_documents(docs) for docs in doc_sets]
    expected_rank = enc.rerank(QUERY, DOCUMENTS)
    stats_before = httpx.get(f"{base_url}/ready").json()["queues"].get("document-128", {"batches": 0, "texts": 0})

    def client_run(worker: int) -> list[str]:
        errors = []
        with http_client(base_url=base_url) as c:
            for i in range(25):
                if (worker + i) % 2:
                    k = (worker * 25 + i) % len(doc_sets)
                    r = c.post("/v1/multi-vector", json={"input": doc_sets[k]})
                    if r.status_code != 200:
                        errors.append(f"{r.status_code} {r.text[:200]}")
                        continue
                    for item, want in zip(r.json()["data"], expected_docs[k], strict=True):
                        got = np.asarray(item["embeddings"], dtype=np.float32)
                        if got.shape != want.shape or not np.allclose(got, want, atol=ATOL, rtol=0):
                            errors.append(f"vectors differ for doc set {k}")
                else:
                    r = c.post("/v1/rerank", json={"query": QUERY, "documents": DOCUMENTS})
                    if r.status_code != 200:
                        errors.append(f"{r.status_code} {r.text[:200]}")
                        continue
                    got = r.json()["results"]
                    if [h["index"] for h in got] != [h["index"] for h in expected_rank] or not np.allclose(
                        [h["relevance_score"] for h in got], [h["relevance_score"] for h in expected_rank], atol=1e-4
                    ):
                        errors.append("rerank differs")
        return errors

    with ThreadPoolExecutor(32) as pool:
        errors = [e for errs in pool.map(client_run, range(32)) for e in errs]
    assert errors == []
    stats = httpx.get(f"{base_url}/ready").json()["queues"]["document-128"]
    batches = stats["batches"] - stats_before["batches"]
    texts = stats["texts"] - stats_before["texts"]
    requests_with_docs = 32 * 25  # every request sends documents
    assert batches < requests_with_docs, f"{batches} ONNX batches for {requests_with_docs} requests: no merging"
    assert texts > 0


def _batch(*lengths: int) -> TokenizedBatch:
    """A stand-in tokenized batch: text i has `lengths[i]` ids, all equal to its length."""
    return TokenizedBatch([np.full(n, n, dtype=np.int64) for n in lengths])


def test_micro_batcher_merges_tokenized_jobs_and_slices_results_back() -> None:
    calls: list[TokenizedBatch] = []

    def run(batch: TokenizedBatch) -> list[np.ndarray]:
        calls.append(batch)
        return [np.full((1, 2), float(len(ids)), dtype=np.float32) for ids in batch.ids]

    async def main() -> list[list[np.ndarray]]:
        with ThreadPoolExecutor(1) as pool:
            batcher = MicroBatcher(run, pool, max_batch_texts=100, max_wait_s=0.05)
            results = await asyncio.gather(*(batcher.submit(_batch(*[i + 1] * (i + 1))) for i in range(5)))
            await batcher.close()
        return results

    results = asyncio.run(main())
    assert len(calls) == 1 and len(calls[0]) == 15  # all five jobs in one run, as one merged batch
    assert calls[0].total_tokens == sum((i + 1) ** 2 for i in range(5))
    for i, vectors in enumerate(results):
        assert len(vectors) == i + 1 and all(v[0, 0] == i + 1 for v in vectors)


def test_micro_batcher_reports_full_queue_and_run_errors() -> None:
    gate = threading.Event()

    def run(batch: TokenizedBatch) -> list[np.ndarray]:
        assert gate.wait(10)
        if 9 in batch.lengths:
            raise ValueError("bad batch")
        return [np.zeros((1, 2), np.float32) for _ in batch.ids]

    async def main() -> None:
        with ThreadPoolExecutor(1) as pool:
            batcher = MicroBatcher(run, pool, max_batch_texts=1, max_wait_s=0, max_queue=1)
            first = asyncio.ensure_future(batcher.submit(_batch(9)))
            await asyncio.sleep(0.1)  # first is running (held by gate)
            second = asyncio.ensure_future(batcher.submit(_batch(2)))
            await asyncio.sleep(0.05)
            with pytest.raises(Overloaded):
                await batcher.submit(_batch(3))
            gate.set()
            with pytest.raises(ValueError, match="bad batch"):
                await first
            assert len(await second) == 1
            await batcher.close()

    asyncio.run(main())


# ---------------------------------------------------------------- process-level: CLI, soak, shutdown


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="RSS is read from /proc (Linux only)")
def test_soak_2000_requests_keeps_memory_flat(toy_model_dir: Path) -> None:
    payloads = [
        ("/v1/multi-vector", {"input": DOCUMENTS[i % 8 :] or DOCUMENTS, "embedding_type": ("float", "base64")[i % 2]})
        for i in range(8)
    ] + [("/v1/rerank", {"query": QUERY, "documents": DOCUMENTS, "top_n": 3})]

    def hammer(n: int, worker: int) -> int:
        bad = 0
        with http_client(base_url=base) as c:
            for i in range(n):
                path, payload = payloads[(worker + i) % len(payloads)]
                bad += c.post(path, json=payload).status_code != 200
        return bad

    with server_process(toy_model_dir) as (proc, base), ThreadPoolExecutor(8) as pool:
        assert sum(pool.map(hammer, [50] * 8, range(8))) == 0  # warm-up: 400 requests
        before = rss_kib(proc.pid)
        assert sum(pool.map(hammer, [200] * 8, range(8))) == 0  # soak: 1600 more
        after = rss_kib(proc.pid)
    growth = (after - before) / before
    assert growth < 0.10, f"RSS grew {before} -> {after} KiB ({growth:.1%}) over 1600 requests"


def test_sigterm_lets_in_flight_requests_finish(toy_model_dir: Path) -> None:
    long_docs = [" ".join(f"token{j}" for j in range(600))] * 24
    with server_process(toy_model_dir) as (proc, base), ThreadPoolExecutor(1) as pool:
        pending = pool.submit(httpx.post, f"{base}/v1/multi-vector", json={"input": long_docs}, timeout=120)
        deadline = time.monotonic() + 20
        while not httpx.get(f"{base}/ready", timeout=5).json()["queues"]:  # request reached the batcher
            assert time.monotonic() < deadline
            time.sleep(0.01)
        proc.send_signal(signal.SIGTERM)
        response = pending.result(timeout=120)
        rc = proc.wait(60)
    assert response.status_code == 200 and len(response.json()["data"]) == 24
    assert rc == 0  # drained, then a clean exit (GracefulServer does not re-raise the signal as uvicorn would)


def test_runtime_and_cli_import_no_web_framework() -> None:
    code = (
        "import sys, colbert_onnx, colbert_onnx.cli, colbert_onnx.server; colbert_onnx.cli.build_parser();"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('fastapi', 'starlette', 'uvicorn')];"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_serve_without_the_server_extra_says_how_to_install_it(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['fastapi'] = None; sys.modules['uvicorn'] = None\n"
        "from colbert_onnx.cli import main; sys.exit(main(['serve', sys.argv[1]]))"
    )
    env = {**os.environ, "COLBERT_ONNX_API_KEY": ""}
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=60, env=env
    )
    assert result.returncode == 2
    assert "[server] extra" in result.stderr


def test_other_dims_share_the_default_encoders_session(toy_model_dir):
    import asyncio

    from colbert_onnx.server.config import ServerConfig
    from colbert_onnx.server.service import ModelService

    async def load_two():
        service = ModelService(ServerConfig(model_dir=str(toy_model_dir)))
        base = await service.load()
        other = await service.load(64)
        return base, other

    base, other = asyncio.run(load_two())
    assert other.session is base.session and other.dim == 64
