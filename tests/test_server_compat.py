"""The Cohere, TEI and vLLM shapes (server/compat.py) driven by the real client libraries ([clients] extra), each
with only its base URL changed, against a live server on 127.0.0.1; order and scores compared with a direct
``ColbertEncoder.rerank``. vLLM's rerank is driven by haystack's VLLMRanker; its score and pooling shapes,
which have no client library, are posted with httpx as vLLM's protocol defines them."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("HAYSTACK_TELEMETRY_ENABLED", "False")  # no telemetry off this machine
os.environ.setdefault("LANGCHAIN_TRACING_V2", "false")

httpx = pytest.importorskip("httpx", reason="the server tests talk HTTP with httpx ([dev] extra)")
pytest.importorskip("fastapi", reason="the HTTP server needs the [server] extra (pip install '.[server]')")

from live_server import TLS, running_server  # noqa: E402

from colbert_onnx import ColbertEncoder, maxsim  # noqa: E402
from colbert_onnx.examples import BERLIN_DOCUMENTS as DOCUMENTS  # noqa: E402
from colbert_onnx.examples import BERLIN_QUERY as QUERY  # noqa: E402
from colbert_onnx.server import ServerConfig  # noqa: E402
from colbert_onnx.server.compat import CLIENT_DEFAULT_MODELS  # noqa: E402

KEY = "compat-key"
SERVED = ("jina-colbert-v2", *CLIENT_DEFAULT_MODELS["cohere"], *CLIENT_DEFAULT_MODELS["vllm"])
CLIENTS = "pip install -e '.[clients]'"


@pytest.fixture(scope="module")
def base_url(toy_model_dir: Path) -> Iterator[str]:
    config = ServerConfig(model_dir=toy_model_dir, dims=(128, 64), api_key=KEY, served_model_names=SERVED,
                          max_inputs_per_request=8)
    with running_server(config) as base:
        yield base


def expected(encoder: ColbertEncoder, top_n: int | None = None) -> list[tuple[int, float]]:
    return [(hit["index"], hit["relevance_score"]) for hit in encoder.rerank(QUERY, DOCUMENTS, top_n=top_n)]


def assert_same_ranking(got: list[tuple[int, float]], want: list[tuple[int, float]]) -> None:
    assert [i for i, _ in got] == [i for i, _ in want]
    assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=1e-4)


# --- Cohere -------------------------------------------------------------------------------------------------


def test_cohere_sdk_client_v2_reranks_like_the_encoder(base_url: str, toy_encoder: ColbertEncoder) -> None:
    cohere = pytest.importorskip("cohere", reason=CLIENTS)
    client = cohere.ClientV2(api_key=KEY, base_url=base_url)
    response = client.rerank(model="rerank-v3.5", query=QUERY, documents=DOCUMENTS, top_n=3)
    assert_same_ranking([(r.index, r.relevance_score) for r in response.results], expected(toy_encoder, 3))
    assert response.id and response.meta.billed_units.search_units == 1


def test_cohere_sdk_v1_client_is_served_by_the_jina_route(base_url: str, toy_encoder: ColbertEncoder) -> None:
    """cohere.Client (v1) posts {model, query, documents, top_n, return_documents} to /v1/rerank: Jina's body
    with Cohere's optional fields, and Jina's response parses as Cohere's (its id and meta are optional)."""
    cohere = pytest.importorskip("cohere", reason=CLIENTS)
    client = cohere.Client(api_key=KEY, base_url=base_url)
    response = client.rerank(model="rerank-english-v3.0", query=QUERY, documents=DOCUMENTS, return_documents=True)
    assert_same_ranking([(r.index, r.relevance_score) for r in response.results], expected(toy_encoder))
    assert [r.document.text for r in response.results] == [DOCUMENTS[r.index] for r in response.results]


def test_langchain_cohere_rerank(base_url: str, toy_encoder: ColbertEncoder) -> None:
    rerank = pytest.importorskip("langchain_cohere", reason=CLIENTS)
    reranker = rerank.CohereRerank(cohere_api_key=KEY, base_url=base_url, model="rerank-v3.5")  # model: mandatory
    got = reranker.rerank(DOCUMENTS, QUERY)  # its default top_n 3
    assert_same_ranking([(r["index"], r["relevance_score"]) for r in got], expected(toy_encoder, 3))


def test_llama_index_cohere_rerank_with_its_default_model(base_url: str, toy_encoder: ColbertEncoder) -> None:
    module = pytest.importorskip("llama_index.postprocessor.cohere_rerank", reason=CLIENTS)
    from llama_index.core.schema import NodeWithScore, TextNode

    reranker = module.CohereRerank(api_key=KEY, base_url=base_url)  # rerank-english-v3.0, top_n 2
    nodes = [NodeWithScore(node=TextNode(text=text, id_=str(i))) for i, text in enumerate(DOCUMENTS)]
    got = reranker.postprocess_nodes(nodes, query_str=QUERY)
    assert_same_ranking([(int(n.node.id_), n.score) for n in got], expected(toy_encoder, 2))


def test_haystack_cohere_ranker_with_its_default_model(base_url: str, toy_encoder: ColbertEncoder) -> None:
    module = pytest.importorskip("haystack_integrations.components.rankers.cohere", reason=CLIENTS)
    from haystack import Document
    from haystack.utils import Secret

    ranker = module.CohereRanker(api_key=Secret.from_token(KEY), api_base_url=base_url)  # rerank-v3.5, top_k 10
    got = ranker.run(query=QUERY, documents=[Document(content=text, id=str(i)) for i, text in enumerate(DOCUMENTS)])
    assert_same_ranking([(int(d.id), d.score) for d in got["documents"]], expected(toy_encoder))


def test_cohere_max_tokens_per_doc_truncates_the_documents(base_url: str, toy_model_dir: Path) -> None:
    cohere = pytest.importorskip("cohere", reason=CLIENTS)
    client = cohere.ClientV2(api_key=KEY, base_url=base_url)
    response = client.rerank(model="rerank-v3.5", query=QUERY, documents=DOCUMENTS, max_tokens_per_doc=6)
    short = ColbertEncoder(toy_model_dir, dim=128, document_max_length=6)
    assert_same_ranking([(r.index, r.relevance_score) for r in response.results], expected(short))


# --- Hugging Face TEI -----------------------------------------------------------------------------------------


def test_llama_index_tei_rerank_gets_maxsim_over_query_length(base_url: str, toy_encoder: ColbertEncoder) -> None:
    """TEI's scores are 0-1 unless raw_scores; here that is MaxSim / 32 (the mean best cosine per query vector)."""
    module = pytest.importorskip("llama_index.postprocessor.tei_rerank", reason=CLIENTS)
    from llama_index.core.schema import NodeWithScore, TextNode

    reranker = module.TextEmbeddingInference(base_url=base_url, auth_token=f"Bearer {KEY}", top_n=3)
    nodes = [NodeWithScore(node=TextNode(text=text, id_=str(i))) for i, text in enumerate(DOCUMENTS)]
    got = reranker.postprocess_nodes(nodes, query_str=QUERY)
    want = [(i, s / toy_encoder.query_max_length) for i, s in expected(toy_encoder, 3)]
    assert_same_ranking([(int(n.node.id_), n.score) for n in got], want)


def test_tei_raw_scores_and_return_text(base_url: str, toy_encoder: ColbertEncoder) -> None:
    body = {"query": QUERY, "texts": DOCUMENTS, "raw_scores": True, "return_text": True}
    r = httpx.post(f"{base_url}/rerank", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    assert r.status_code == 200, r.text
    assert_same_ranking([(x["index"], x["score"]) for x in r.json()], expected(toy_encoder))
    assert [x["text"] for x in r.json()] == [DOCUMENTS[x["index"]] for x in r.json()]


def test_tei_truncate_false_refuses_a_text_the_server_would_cut_naming_it(base_url: str) -> None:
    """TEI answers `truncate: false` with a validation error (422 since TEI 1.9) for a too-long input; so does this
    server, naming the text and the limit, rather than truncating what the client said not to."""
    texts = ["Berlin is big.", "Berlin " * 9000]  # the second is over the toy folder's 8192 tokens
    r = post(base_url, "/rerank", {"query": QUERY, "texts": texts, "truncate": False})
    assert r.status_code == 422, r.text
    assert "texts[1]" in r.json()["detail"] and "document_max_length=8192" in r.json()["detail"]
    r = post(base_url, "/rerank", {"query": "Berlin " * 40, "texts": ["Berlin is big."], "truncate": False})
    assert r.status_code == 422 and "query_max_length=32" in r.json()["detail"] and "query" in r.json()["detail"]


@pytest.mark.parametrize("truncate", [True, None, False], ids=["true", "absent", "false-and-short-enough"])
def test_tei_truncation_where_allowed_or_not_needed_answers(base_url: str, truncate) -> None:
    long = "Berlin " * 9000 if truncate is not False else "Berlin " * 100
    body = {"query": QUERY, "texts": ["Berlin is big.", long], **({} if truncate is None else {"truncate": truncate})}
    r = post(base_url, "/rerank", body)
    assert r.status_code == 200, r.text
    assert sorted(x["index"] for x in r.json()) == [0, 1]


# --- vLLM: haystack's VLLMRanker, then the other shapes as vLLM's protocol defines them (no client library) -------


@pytest.mark.parametrize("suffix", ["/v1", ""], ids=["its-default-v1-rerank", "plain-rerank"])
def test_vllm_haystack_ranker(base_url: str, toy_encoder: ColbertEncoder, suffix: str) -> None:
    """vllm-haystack `VLLMRanker` posts {model, query, documents[, top_n]} to `{api_base_url}/rerank`: with its
    default base URL form (".../v1") that is Jina's /v1/rerank, without it the vLLM /rerank; both answer alike."""
    module = pytest.importorskip("haystack_integrations.components.rankers.vllm", reason=CLIENTS)
    from haystack import Document
    from haystack.utils import Secret

    ranker = module.VLLMRanker(model="jinaai/jina-colbert-v2", api_key=Secret.from_token(KEY),
                               api_base_url=f"{base_url}{suffix}")
    got = ranker.run(query=QUERY, documents=[Document(content=text, id=str(i)) for i, text in enumerate(DOCUMENTS)],
                     top_k=3)
    assert_same_ranking([(int(d.id), d.score) for d in got["documents"]], expected(toy_encoder, 3))
    assert got["meta"]["model"] == "jinaai/jina-colbert-v2"


def post(base_url: str, path: str, body: dict[str, Any], key: str | None = KEY) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{base_url}{path}", json=body, headers=headers, timeout=60, verify=TLS)


def test_vllm_rerank_shares_the_path_with_tei_told_apart_by_documents(base_url: str, toy_encoder) -> None:
    r = post(base_url, "/rerank", {"model": "jinaai/jina-colbert-v2", "query": QUERY, "documents": DOCUMENTS,
                                   "top_n": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert_same_ranking([(x["index"], x["relevance_score"]) for x in body["results"]], expected(toy_encoder, 2))
    assert body["model"] == "jinaai/jina-colbert-v2" and body["usage"]["total_tokens"] > 0
    assert [x["document"]["text"] for x in body["results"]] == [DOCUMENTS[x["index"]] for x in body["results"]]


@pytest.mark.parametrize("path", ["/rerank", "/v1/rerank"])
def test_vllms_rerank_body_gets_vllms_answer_on_either_path(base_url: str, toy_model_dir: Path, path: str) -> None:
    """vLLM serves one rerank shape at /rerank and /v1/rerank (Jina's path; VLLMRanker's default): top_n 0 is every
    document, truncate_prompt_tokens truncates them, and the answer has an id and usage.prompt_tokens."""
    body = {"model": "jinaai/jina-colbert-v2", "query": QUERY, "documents": DOCUMENTS, "top_n": 0,
            "truncate_prompt_tokens": 6}
    r = post(base_url, path, body)
    assert r.status_code == 200, r.text
    got = r.json()
    short = ColbertEncoder(toy_model_dir, dim=128, document_max_length=6)
    assert_same_ranking([(x["index"], x["relevance_score"]) for x in got["results"]], expected(short))
    assert got["id"].startswith("rerank-") and got["usage"]["prompt_tokens"] == got["usage"]["total_tokens"] > 0


def test_a_rerank_body_with_both_texts_and_documents_is_refused(base_url: str) -> None:
    r = post(base_url, "/rerank", {"query": QUERY, "documents": DOCUMENTS, "texts": DOCUMENTS})
    assert r.status_code == 422 and "texts" in r.json()["detail"]


@pytest.mark.parametrize("path", ["/score", "/v1/score"])
@pytest.mark.parametrize("fields", [("text_1", "text_2"), ("queries", "documents"), ("data_1", "data_2")])
def test_vllm_score_one_query_against_documents(base_url: str, toy_encoder, path: str, fields) -> None:
    r = post(base_url, path, {fields[0]: QUERY, fields[1]: DOCUMENTS})
    assert r.status_code == 200, r.text
    got = [x["score"] for x in r.json()["data"]]
    want = dict(expected(toy_encoder))
    assert got == pytest.approx([want[i] for i in range(len(DOCUMENTS))], abs=1e-4)
    assert r.json()["object"] == "list" and r.json()["data"][0]["object"] == "score"


def test_vllm_score_pairs(base_url: str, toy_encoder: ColbertEncoder) -> None:
    queries = [QUERY, "Cats", "Paris"]
    r = post(base_url, "/score", {"text_1": queries, "text_2": DOCUMENTS[:3]})
    assert r.status_code == 200, r.text
    want = [toy_encoder.rerank(q, [d])[0]["relevance_score"] for q, d in zip(queries, DOCUMENTS[:3], strict=True)]
    assert [x["score"] for x in r.json()["data"]] == pytest.approx(want, abs=1e-4)
    bad = post(base_url, "/score", {"text_1": queries[:2], "text_2": DOCUMENTS[:3]})
    assert bad.status_code == 422 and "one per document" in bad.json()["detail"]


@pytest.mark.parametrize("mode,dims", [("document", None), ("query", 64)])
def test_vllm_pooling_token_embed_gives_the_encoders_vectors(base_url: str, toy_model_dir: Path, mode, dims) -> None:
    body = {"model": "jinaai/jina-colbert-v2", "input": DOCUMENTS[:2], "task": "token_embed", "embedding_mode": mode}
    if dims:
        body["dimensions"] = dims
    r = post(base_url, "/pooling", body)
    assert r.status_code == 200, r.text
    encoder = ColbertEncoder(toy_model_dir, dim=dims or 128)
    want = encoder.encode_queries(DOCUMENTS[:2]) if mode == "query" else encoder.encode_documents(DOCUMENTS[:2])
    for item, vectors in zip(r.json()["data"], want, strict=True):
        np.testing.assert_allclose(np.asarray(item["data"], dtype=np.float32), vectors, atol=1e-5)


def test_vllm_pooling_refuses_other_tasks(base_url: str) -> None:
    r = post(base_url, "/pooling", {"input": "x", "task": "embed"})
    assert r.status_code == 422 and "token_embed" in r.json()["detail"]


# --- the same auth, limits and model names as the Jina endpoints ----------------------------------------------


@pytest.mark.parametrize(
    "path,body",
    [
        ("/v2/rerank", {"model": "rerank-v3.5", "query": "q", "documents": ["a"]}),
        ("/rerank", {"query": "q", "texts": ["a"]}),
        ("/score", {"text_1": "q", "text_2": ["a"]}),
        ("/pooling", {"input": ["a"]}),
    ],
)
def test_every_new_route_needs_the_key_and_keeps_the_limits(base_url: str, path: str, body: dict) -> None:
    assert post(base_url, path, body, key=None).status_code == 401
    assert post(base_url, path, body).status_code == 200
    many = {k: (["a"] * 9 if isinstance(v, list) else v) for k, v in body.items()}
    r = post(base_url, path, many)
    assert r.status_code == 422 and r.json()["limit"] == "max_inputs_per_request"


def test_an_unserved_model_name_is_422_naming_the_served_ones(base_url: str) -> None:
    r = post(base_url, "/v2/rerank", {"model": "rerank-multilingual-v2.0", "query": "q", "documents": ["a"]})
    assert r.status_code == 422 and "rerank-v3.5" in r.json()["detail"]


def test_the_new_routes_are_in_the_openapi_schema(base_url: str) -> None:
    paths = httpx.get(f"{base_url}/openapi.json", timeout=30).json()["paths"]
    for path in ("/v2/rerank", "/rerank", "/score", "/v1/score", "/pooling", "/v1/rerank"):
        assert "post" in paths[path], path


def test_cohere_v1_rank_fields_other_than_text_are_refused(base_url: str) -> None:
    cohere = pytest.importorskip("cohere", reason=CLIENTS)
    client = cohere.Client(api_key=KEY, base_url=base_url)
    with pytest.raises(cohere.UnprocessableEntityError, match="rank_fields"):
        client.rerank(model="rerank-english-v3.0", query=QUERY, documents=[{"text": "a", "title": "b"}],
                      rank_fields=["title"])


def test_v1_models_lists_the_new_endpoints(base_url: str) -> None:
    r = httpx.get(f"{base_url}/v1/models", headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
    for model in r.json()["data"]:
        assert {"/v1/multi-vector", "/v1/rerank", "/v2/rerank", "/rerank", "/score", "/v1/score",
                "/pooling"} <= set(model["endpoints"])


def test_a_truncation_below_the_framing_keeps_the_framing(base_url: str) -> None:
    """max_tokens_per_doc 1 (schema-valid: a positive integer) reads as 3, the <s>, marker and </s> tokens."""
    got = {}
    for tokens in (1, 3):
        body = {"model": "rerank-v3.5", "query": QUERY, "documents": DOCUMENTS, "max_tokens_per_doc": tokens}
        r = post(base_url, "/v2/rerank", body)
        assert r.status_code == 200, r.text
        got[tokens] = [(x["index"], x["relevance_score"]) for x in r.json()["results"]]
    assert_same_ranking(got[1], got[3])


def test_cohere_v2_requires_a_served_model(base_url: str) -> None:
    r = post(base_url, "/v2/rerank", {"query": "q", "documents": ["a"]})
    assert r.status_code == 422 and "model" in r.json()["detail"]


# --- fields of the originals that are honoured, or refused by the schema, never dropped ------------------------


@pytest.mark.parametrize("embed_dtype,endianness,dtype,atol", [
    ("float32", "native", "=f4", 0), ("float32", "big", ">f4", 0), ("float16", "little", "<f2", 1e-3),
    ("float16", "big", ">f2", 1e-3), ("bfloat16", "native", "=u2", 4e-3), ("bfloat16", "big", ">u2", 4e-3)])
def test_vllm_pooling_base64_is_in_the_embed_dtype_and_byte_order_asked_for(base_url: str, embed_dtype, endianness,
                                                                           dtype, atol) -> None:
    import base64

    body = {"input": DOCUMENTS[:2], "encoding_format": "float"}
    floats = [np.asarray(x["data"], dtype=np.float32) for x in post(base_url, "/pooling", body).json()["data"]]
    body.update(encoding_format="base64", embed_dtype=embed_dtype, endianness=endianness)
    r = post(base_url, "/pooling", body)
    assert r.status_code == 200, r.text
    for item, want in zip(r.json()["data"], floats, strict=True):
        raw = np.frombuffer(base64.b64decode(item["data"]), dtype=dtype)
        got = ((raw.astype(np.uint32) << 16).view(np.float32) if embed_dtype == "bfloat16"
               else raw.astype(np.float32))
        np.testing.assert_allclose(got.reshape(want.shape), want, atol=atol, rtol=0)


@pytest.mark.parametrize("path,body", [
    ("/pooling", {"input": "x", "embed_dtype": "fp8_e4m3"}),
    ("/pooling", {"input": "x", "add_special_tokens": False}),
    ("/pooling", {"input": "x", "normalize": False}),
    ("/pooling", {"input": "x", "use_activation": False}),
], ids=["fp8", "no-special-tokens", "no-normalize", "no-activation"])
def test_a_setting_of_the_original_api_this_server_cannot_honour_is_a_422_naming_it(base_url: str, path: str,
                                                                                    body: dict) -> None:
    r = post(base_url, path, body)
    assert r.status_code == 422, r.text
    (field,) = [k for k in body if k not in ("input", "query", "documents", "texts", "model", "text_1", "text_2")]
    assert field in r.text


@pytest.mark.parametrize("path,field,extra", [
    ("/v1/rerank", "max_tokens_per_doc", {}), ("/v1/rerank", "truncate_prompt_tokens", {}),
    ("/v2/rerank", "truncate_prompt_tokens", {"model": "rerank-v3.5"}),
    ("/v2/rerank", "max_tokens_per_doc", {"model": "rerank-v3.5"})])
def test_either_truncation_field_truncates_on_either_rerank_route(base_url: str, toy_model_dir: Path, path, field,
                                                                 extra) -> None:
    r = post(base_url, path, {"query": QUERY, "documents": DOCUMENTS, field: 6, **extra})
    assert r.status_code == 200, r.text
    short = ColbertEncoder(toy_model_dir, dim=128, document_max_length=6)
    assert_same_ranking([(x["index"], x["relevance_score"]) for x in r.json()["results"]], expected(short))


@pytest.mark.parametrize("path,extra", [("/v1/rerank", {}), ("/v2/rerank", {"model": "rerank-v3.5"})])
def test_both_truncation_fields_at_once_are_refused(base_url: str, path: str, extra: dict) -> None:
    r = post(base_url, path, {"query": "q", "documents": ["d"], "max_tokens_per_doc": 6, "truncate_prompt_tokens": 8,
                              **extra})
    assert r.status_code == 422 and "not both" in r.json()["detail"]


def test_jina_rerank_truncate_false_refuses_a_document_the_server_would_cut(base_url: str) -> None:
    r = post(base_url, "/v1/rerank", {"query": QUERY, "documents": ["Berlin is big.", "Berlin " * 9000],
                                      "truncate": False})
    assert r.status_code == 413 and r.json()["limit"] == "document_max_length" and "documents[1]" in r.text
    assert post(base_url, "/v1/rerank", {"query": QUERY, "documents": DOCUMENTS, "truncate": False}).status_code == 200


def test_tei_rerank_of_no_texts_is_refused_as_tei_does(base_url: str) -> None:
    r = post(base_url, "/rerank", {"query": "q", "texts": []})
    assert r.status_code == 422 and "texts" in r.text


# --- truncation side: TEI's truncation_direction and vLLM's truncation_side, honoured wherever a body has one ------

# A query over its 32 tokens and documents over SIDE_LIMIT tokens, each ending otherwise than it starts.
SIDE_QUERY = ("What is the population of Berlin? " + "Tell me about the city and its long history. " * 3
              + "Which river flows through Paris?")
SIDE_DOCUMENTS = ["Berlin has 3.8 million inhabitants and many museums; Paris lies on the Seine.",
                  "Paris is the capital of France and lies on the Seine; Berlin is the capital of Germany."]
SIDE_LIMIT = 10
# route id -> (path, body without the side, the side's field, its "left" and "right" as that API spells them)
_VLLM_BODY = {"query": SIDE_QUERY, "documents": SIDE_DOCUMENTS, "truncate_prompt_tokens": SIDE_LIMIT}
_SCORE_BODY = {"text_1": SIDE_QUERY, "text_2": SIDE_DOCUMENTS, "truncate_prompt_tokens": SIDE_LIMIT}
SIDE_ROUTES = {
    "vllm-rerank": ("/rerank", _VLLM_BODY, "truncation_side", "left", "right"),
    "jina-v1-rerank": ("/v1/rerank", _VLLM_BODY, "truncation_side", "left", "right"),
    "cohere-v2-rerank": ("/v2/rerank", {"model": "rerank-v3.5", "query": SIDE_QUERY, "documents": SIDE_DOCUMENTS,
                                        "max_tokens_per_doc": SIDE_LIMIT}, "truncation_side", "left", "right"),
    "score": ("/score", _SCORE_BODY, "truncation_side", "left", "right"),
    "v1-score": ("/v1/score", _SCORE_BODY, "truncation_side", "left", "right"),
    "tei-rerank": ("/rerank", {"query": SIDE_QUERY, "texts": SIDE_DOCUMENTS, "raw_scores": True},
                   "truncation_direction", "Left", "Right"),
    "tei-rerank-lowercase": ("/rerank", {"query": SIDE_QUERY, "texts": SIDE_DOCUMENTS, "raw_scores": True},
                             "truncation_direction", "left", "right"),
}


def _scores_by_index(response: httpx.Response) -> list[float]:
    """The score of each document in input order, from any of the rerank and score answers."""
    body = response.json()
    items = body if isinstance(body, list) else body.get("results") or body["data"]
    by_index = {item["index"]: item.get("relevance_score", item.get("score")) for item in items}
    return [by_index[i] for i in range(len(by_index))]


def _side_scores(base_url: str, route: str, side: str) -> list[float]:
    path, body, field, left, right = SIDE_ROUTES[route]
    r = post(base_url, path, {**body, field: left if side == "left" else right})
    assert r.status_code == 200, r.text
    return _scores_by_index(r)


@pytest.mark.parametrize("route", sorted(SIDE_ROUTES))
def test_left_truncation_answers_with_the_scores_of_an_encoder_cutting_on_the_left(base_url: str, toy_model_dir: Path,
                                                                                  route: str) -> None:
    """The query keeps its last tokens, and so do the documents where the body cuts them (TEI's body has no
    per-request limit: its texts here are under the server's length)."""
    limited = not route.startswith("tei")
    encoder = ColbertEncoder(toy_model_dir, dim=128, **({"document_max_length": SIDE_LIMIT} if limited else {}))
    (query,) = encoder.encode_queries([SIDE_QUERY], truncation_side="left")
    want = maxsim(query, encoder.encode_documents(SIDE_DOCUMENTS, truncation_side="left"))
    assert _side_scores(base_url, route, "left") == pytest.approx(want.tolist(), abs=1e-4)


@pytest.mark.parametrize("route", sorted(SIDE_ROUTES))
def test_left_and_right_truncation_score_texts_that_end_otherwise_than_they_start_differently(base_url: str,
                                                                                             route: str) -> None:
    left, right = _side_scores(base_url, route, "left"), _side_scores(base_url, route, "right")
    for a, b in zip(left, right, strict=True):
        assert abs(a - b) > 1e-3, (left, right)


@pytest.mark.parametrize("mode", ["document", "query"])
def test_vllm_pooling_left_truncation_gives_the_vectors_of_the_last_tokens(base_url: str, toy_encoder, mode) -> None:
    texts = SIDE_DOCUMENTS if mode == "document" else [SIDE_QUERY]
    body = {"input": texts, "embedding_mode": mode, "truncation_side": "left"}
    if mode == "document":
        body["truncate_prompt_tokens"] = SIDE_LIMIT
    r = post(base_url, "/pooling", body)
    assert r.status_code == 200, r.text
    batch = toy_encoder.tokenize(texts, mode, truncation_side="left",
                                 **({"max_length": SIDE_LIMIT} if mode == "document" else {}))
    want = toy_encoder.encode_ids(batch)
    for item, vectors in zip(r.json()["data"], want, strict=True):
        np.testing.assert_allclose(np.asarray(item["data"], dtype=np.float32), vectors, atol=1e-5)


@pytest.mark.parametrize("value", ["middle", "LEFT"])
@pytest.mark.parametrize("path,body", [
    ("/pooling", {"input": "x"}),
    ("/rerank", {"query": "q", "documents": ["d"]}),
    ("/v1/rerank", {"query": "q", "documents": ["d"]}),
    ("/v2/rerank", {"model": "rerank-v3.5", "query": "q", "documents": ["d"]}),
    ("/score", {"text_1": "q", "text_2": ["d"]}),
    ("/v1/score", {"text_1": "q", "text_2": ["d"]}),
    ("/rerank", {"query": "q", "texts": ["d"]}),
], ids=["pooling", "vllm-rerank", "jina-v1-rerank", "cohere-v2-rerank", "score", "v1-score", "tei-rerank"])
def test_a_truncation_side_neither_left_nor_right_is_a_422_naming_the_field_and_the_values(base_url: str, path: str,
                                                                                          body: dict, value) -> None:
    field = "truncation_direction" if "texts" in body else "truncation_side"
    r = post(base_url, path, {**body, field: value})
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert field in detail and "'left'" in detail and "'right'" in detail, detail
