"""Wire formats of the four Jina rerank clients (issue 16): each request exactly as the library sends it, with its
own default model name, against a server started with those names; each response read back as the library reads it.

The payloads, headers and parsing below are copied from the libraries' source (cited per test); the libraries
themselves are not installed in CI. docs/server.md says how they were also run end to end once.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

httpx = pytest.importorskip("httpx", reason="the server tests talk HTTP with httpx ([server] extra)")
pytest.importorskip("fastapi", reason="the HTTP server needs the [server] extra (pip install '.[server]')")

from live_server import running_server  # noqa: E402

from colbert_onnx import ColbertEncoder  # noqa: E402
from colbert_onnx.examples import BERLIN_DOCUMENTS as DOCUMENTS  # noqa: E402
from colbert_onnx.examples import BERLIN_QUERY as QUERY  # noqa: E402
from colbert_onnx.server import ServerConfig  # noqa: E402

KEY = "client-key"
# The default model of each client (see the tests), plus this model's own name.
CLIENT_DEFAULTS = ("jina-reranker-v1-base-en", "jina-reranker-v2-base-multilingual", "jina-reranker-v3")
SERVED = ("jina-colbert-v2", *CLIENT_DEFAULTS)


def requests_body(data: dict) -> bytes:
    """The bytes `requests` sends for `json=data` (requests/models.py: complexjson.dumps(json, allow_nan=False))."""
    return json.dumps(data, allow_nan=False).encode("utf-8")


def httpx_body(data: dict) -> bytes:
    """The bytes `httpx` (>= 0.28) sends for `json=data` (httpx/_content.py: encode_json)."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


@pytest.fixture(scope="module")
def base_url(toy_model_dir: Path) -> Iterator[str]:
    config = ServerConfig(model_dir=toy_model_dir, dims=(128,), api_key=KEY, served_model_names=SERVED)
    with running_server(config) as base:
        yield base


@pytest.fixture(scope="module")
def expected(toy_encoder: ColbertEncoder) -> Callable[[int | None], list[dict[str, Any]]]:
    """The direct encoder's ranking of the Berlin documents, best first, `top_n` of them."""
    return lambda top_n: toy_encoder.rerank(QUERY, DOCUMENTS, top_n=top_n)


def rerank_as_client(base_url: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    """POST /v1/rerank with the client's exact headers and bytes; its JSON answer, after checking it is a 200."""
    r = httpx.post(f"{base_url}/v1/rerank", content=body, headers=headers, timeout=60)
    r.raise_for_status()  # what jina-cli does; the other three read the body and need "results" in it
    resp = r.json()
    assert "results" in resp, resp
    return resp


def assert_ranked_like_the_encoder(got: list[tuple[int, float]], expected: list[dict[str, Any]]) -> None:
    assert [i for i, _ in got] == [hit["index"] for hit in expected]
    assert [score for _, score in got] == pytest.approx([hit["relevance_score"] for hit in expected], abs=1e-4)


def test_langchain_community_jina_rerank(base_url: str, expected) -> None:
    """langchain-community `JinaRerank` (langchain-ai/langchain-community,
    libs/community/langchain_community/document_compressors/jina_rerank.py, commit bc87773): a requests.Session
    with these headers posts `{"query", "documents", "model", "top_n"}`, model "jina-reranker-v1-base-en" and
    top_n 3 by default; it raises RuntimeError(resp["detail"]) unless "results" is in the body, reads
    `results[].index` and `results[].relevance_score`, and `compress_documents` takes `documents[index]`.
    """
    headers = {
        "Authorization": f"Bearer {KEY}",
        "Accept-Encoding": "identity",
        "Content-type": "application/json",
        "user-agent": "langchain",
    }
    data = {"query": QUERY, "documents": DOCUMENTS, "model": "jina-reranker-v1-base-en", "top_n": 3}
    resp = rerank_as_client(base_url, headers, requests_body(data))
    got = [(res["index"], res["relevance_score"]) for res in resp["results"]]
    assert_ranked_like_the_encoder(got, expected(3))
    assert [DOCUMENTS[i] for i, _ in got] == [hit["document"] for hit in expected(3)]  # compress_documents
    assert resp["model"] == "jina-reranker-v1-base-en"


def test_llama_index_jina_rerank(base_url: str, expected) -> None:
    """llama-index `JinaRerank` (run-llama/llama_index, llama-index-integrations/postprocessor/
    llama-index-postprocessor-jinaai-rerank/llama_index/postprocessor/jinaai_rerank/base.py; the same in the 0.6.0
    release, which adds `base_url`): a requests.Session with Authorization and Accept-Encoding headers posts
    `json={"query", "documents", "model", "top_n"}`, model "jina-reranker-v1-base-en" and top_n 2 by default;
    RuntimeError(resp["detail"]) unless "results" is in the body, then
    `NodeWithScore(node=nodes[result["index"]].node, score=result["relevance_score"])` per result.
    """
    headers = {"Authorization": f"Bearer {KEY}", "Accept-Encoding": "identity", "Content-Type": "application/json"}
    data = {"query": QUERY, "documents": DOCUMENTS, "model": "jina-reranker-v1-base-en", "top_n": 2}
    resp = rerank_as_client(base_url, headers, requests_body(data))
    nodes = [(result["index"], result["relevance_score"]) for result in resp["results"]]
    assert_ranked_like_the_encoder(nodes, expected(2))


def test_haystack_jina_ranker(base_url: str, expected) -> None:
    """haystack `JinaRanker` (deepset-ai/haystack-core-integrations,
    integrations/jina/src/haystack_integrations/components/rankers/jina/ranker.py, commit 50a84e9): httpx posts
    `{"query", "documents", "model", "top_n"}` to `base_url` (the full /v1/rerank URL) with model
    "jina-reranker-v1-base-en" and `top_n` null when no top_k is set; `_parse_response` reads
    `results[].index`, `results[].relevance_score` and returns `meta={"model": resp["model"], "usage": resp["usage"]}`.
    """
    headers = {"Authorization": f"Bearer {KEY}", "Accept-Encoding": "identity", "Content-type": "application/json"}
    data = {"query": QUERY, "documents": DOCUMENTS, "model": "jina-reranker-v1-base-en", "top_n": None}
    resp = rerank_as_client(base_url, headers, httpx_body(data))
    got = [(result["index"], result["relevance_score"]) for result in resp["results"]]
    assert_ranked_like_the_encoder(got, expected(None))
    meta = {"model": resp["model"], "usage": resp["usage"]}
    assert meta["model"] == "jina-reranker-v1-base-en"
    assert dict(meta["usage"].items())["total_tokens"] > len(DOCUMENTS) * 3  # framing tokens at least


@pytest.mark.parametrize("top_n", [None, 2])
def test_jina_cli_rerank(base_url: str, expected, top_n: int | None) -> None:
    """The `jina rerank` CLI (jina-ai/cli, jina_cli/api.py `rerank` and jina_cli/utils.py `format_rerank_results`,
    commit d27a62d): httpx posts `{"model", "query", "documents"}` (+ `top_n` only when -n is given) with model
    "jina-reranker-v3"; `raise_for_status()`, then `data.get("results", [])`; each line prints
    `r.get("relevance_score", r.get("score", 0))` and `r["document"]["text"]` when `document` is a dict, else the
    input line at `r.get("index")`.
    """
    headers = {"User-Agent": "jina-cli/0.3.0", "Content-Type": "application/json", "Authorization": f"Bearer {KEY}"}
    data: dict[str, Any] = {"model": "jina-reranker-v3", "query": QUERY, "documents": DOCUMENTS}
    if top_n is not None:
        data["top_n"] = top_n
    resp = rerank_as_client(base_url, headers, httpx_body(data))
    results = resp.get("results", [])
    got = [(res.get("index", 0), res.get("relevance_score", res.get("score", 0))) for res in results]
    assert_ranked_like_the_encoder(got, expected(top_n))
    texts = [res["document"]["text"] for res in results if isinstance(res.get("document"), dict)]
    assert texts == [hit["document"] for hit in expected(top_n)]  # printed from the response, not the input
    assert resp["model"] == "jina-reranker-v3"


def test_a_client_default_name_not_served_gets_422_with_a_detail_the_clients_raise(toy_model_dir: Path) -> None:
    """Without the names in --served-model-name, every client's default gets 422; langchain, llama-index and haystack
    raise RuntimeError(resp["detail"]), so `detail` must say which names are served."""
    with running_server(ServerConfig(model_dir=toy_model_dir, dims=(128,))) as base:
        r = httpx.post(f"{base}/v1/rerank", json={"query": "q", "documents": ["a"], "model": CLIENT_DEFAULTS[0]})
    assert r.status_code == 422 and "results" not in r.json()
    assert "served: jina-colbert-v2" in r.json()["detail"]


@pytest.mark.parametrize(
    "payload",
    [
        {"input": ["Berlin"], "model": "jina-embeddings-v2-base-en"},
        {"input": ["Berlin"], "model": "jina-embeddings-v3", "task": "retrieval.query"},
        {"input": ["Berlin"], "model": "jina-embeddings-v2-base-en", "encoding_type": "float"},
    ],
    ids=["langchain-JinaEmbeddings", "haystack-JinaTextEmbedder", "llama-index-JinaEmbedding"],
)
def test_single_vector_embedders_raise_the_detail_that_points_to_multi_vector(base_url: str, payload: dict) -> None:
    """langchain-community `JinaEmbeddings` (libs/community/langchain_community/embeddings/jina.py, `_embed`),
    haystack `JinaTextEmbedder` (integrations/jina/src/haystack_integrations/components/embedders/jina/
    text_embedder.py, `_prepare_request_payload` / `_parse_response`) and llama-index `JinaEmbedding`
    (llama-index-integrations/embeddings/llama-index-embeddings-jinaai/llama_index/embeddings/jinaai/base.py,
    `_JinaAPICaller.get_embeddings`) post `{"input", "model"[, "task" | "encoding_type"]}` to /v1/embeddings and
    raise RuntimeError(resp["detail"]) when "data" is not in the body: that detail is what the user reads, so it
    must say where the multi-vectors are."""
    headers = {"Authorization": f"Bearer {KEY}", "Accept-Encoding": "identity", "Content-type": "application/json"}
    r = httpx.post(f"{base_url}/v1/embeddings", content=requests_body(payload), headers=headers, timeout=60)
    resp = r.json()
    assert r.status_code == 404 and "data" not in resp
    assert "multi-vector" in resp["detail"] and "/v1/multi-vector" in resp["detail"]
