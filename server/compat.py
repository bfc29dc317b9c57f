"""The other common rerank APIs on the same server: Cohere /v2/rerank, TEI and vLLM /rerank, vLLM /score and
/pooling. Same auth, limits, micro-batching (ModelService) and error mapping (create_app's handlers) as the Jina
endpoints; Cohere's v1 shape and vLLM's (at its /v1/rerank path) are served by Jina's /v1/rerank (docs/server.md,
"Other rerank APIs")."""

from __future__ import annotations

import base64
import math
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
from fastapi import APIRouter, Depends
from fastapi.responses import Response

from .compat_schemas import (
    SCORE_FIELDS,
    CohereRerankRequest,
    TeiRerankRequest,
    VllmPoolingRequest,
    VllmRerankRequest,
    VllmScoreRequest,
)
from .formats import embedding_bytes
from .schemas import (
    MODEL_ENDPOINT_STATUSES,
    RerankRequest,
    error_responses,
    texts_of,
    truncation_side_of,
    truncation_tokens,
)
from .service import BadRequest, LimitExceeded, ModelService

# The model names each API's clients send by default (served when listed in --served-model-name, as Jina's):
# cohere-haystack CohereRanker, llama-index CohereRerank; vLLM's default served name is the hub id.
CLIENT_DEFAULT_MODELS = {
    "cohere": ("rerank-v3.5", "rerank-english-v3.0"),
    "vllm": ("jinaai/jina-colbert-v2",),
}
# The POST routes below, as /v1/models lists them.
ENDPOINTS = ("/v2/rerank", "/rerank", "/score", "/v1/score", "/pooling")


def one_truncation(body: Any) -> int | None:
    """The per-request document limit of a body that may carry vLLM's truncate_prompt_tokens and Cohere's
    max_tokens_per_doc: one of them (BadRequest when both are set, rather than pick one)."""
    vllm, cohere = getattr(body, "truncate_prompt_tokens", None), getattr(body, "max_tokens_per_doc", None)
    if vllm is not None and cohere is not None:
        raise BadRequest("give one of truncate_prompt_tokens (vLLM's) and max_tokens_per_doc (Cohere's), not both")
    return truncation_tokens(cohere if vllm is None else vllm)


def _json(content: Any) -> Response:
    return Response(orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")


async def vllm_rerank_answer(service: ModelService, body: RerankRequest | VllmRerankRequest,
                             with_documents: bool) -> dict[str, Any]:
    """vLLM's rerank answer (its one shape, served at /rerank and at Jina's /v1/rerank, whose answer it extends):
    documents best first, `top_n` 0 or none = all, `truncate_prompt_tokens` applied, each document's text where
    `with_documents`; `truncation_side` where texts are cut."""
    model = service.check_model(body.model)
    (query,) = texts_of(body.query, "query")
    documents = texts_of(body.documents, "documents")
    truncation = one_truncation(body)
    if getattr(body, "truncate", None) is False:
        await service.refuse_truncation([query], "query", "query")
        await service.refuse_truncation(documents, "documents", "document")
    ranked, tokens = await service.rerank(query, documents, body.top_n or None, truncation,
                                          truncation_side_of(body.truncation_side))
    if with_documents:
        for hit in ranked:
            hit["document"] = {"text": documents[hit["index"]]}
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return {"id": f"rerank-{uuid.uuid4().hex}", "model": model, "usage": usage, "results": ranked}


def compat_router(service: ModelService, authorize: Callable[..., Any]) -> APIRouter:
    """The routes of the Cohere, TEI and vLLM shapes, behind `authorize` (create_app's API-key check)."""
    responses = error_responses(*MODEL_ENDPOINT_STATUSES, api_key=service.config.api_key is not None)
    router = APIRouter(dependencies=[Depends(authorize)], responses=responses)

    @router.post("/v2/rerank", tags=["cohere"], summary="Cohere v2 rerank: documents by MaxSim, best first")
    async def cohere_rerank(body: CohereRerankRequest) -> Response:
        model = service.check_model(body.model)
        (query,) = texts_of(body.query, "query")
        documents = texts_of(body.documents, "documents")
        ranked, tokens = await service.rerank(query, documents, body.top_n, one_truncation(body),
                                              truncation_side_of(body.truncation_side))
        if body.return_documents:
            for hit in ranked:
                hit["document"] = {"text": documents[hit["index"]]}
        meta = {
            "api_version": {"version": "2"},
            "billed_units": {"search_units": max(1, math.ceil(len(documents) / 100))},
            "tokens": {"input_tokens": tokens},
        }
        return _json({"id": str(uuid.uuid4()), "results": ranked, "meta": meta, "model": model,
                      "usage": {"total_tokens": tokens}})

    @router.post(
        "/rerank",
        tags=["tei", "vllm"],
        summary="TEI ({query, texts} -> [{index, score}]) or vLLM ({query, documents} -> {results}) rerank",
    )
    async def rerank(body: TeiRerankRequest | VllmRerankRequest) -> Response:
        if isinstance(body, TeiRerankRequest):
            return await _tei(body)
        return await _vllm_rerank(body)

    async def _tei(body: TeiRerankRequest) -> Response:
        (query,) = texts_of(body.query, "query")
        texts = texts_of(body.texts, "texts")
        if body.truncate is False:  # TEI's explicit "no truncation": refused where a text would be cut
            try:
                await service.refuse_truncation([query], "query", "query")
                await service.refuse_truncation(texts, "texts", "document")
            except LimitExceeded as exc:  # TEI (1.9 on) answers a validation error, 422, not 413
                raise BadRequest(str(exc)) from None
        scores, _ = await service.score([query], texts, truncation_side=truncation_side_of(body.truncation_direction))
        ranked = np.argsort(-scores[0], kind="stable")  # best first, ties in input order, as ranking.rank
        divisor = 1.0 if body.raw_scores else float(service.query_length)
        results = [{"index": int(i), "score": float(scores[0][i]) / divisor} for i in ranked]
        if body.return_text:
            for hit in results:
                hit["text"] = texts[hit["index"]]
        return _json(results)

    async def _vllm_rerank(body: VllmRerankRequest) -> Response:
        return _json(await vllm_rerank_answer(service, body, with_documents=True))

    async def score(body: VllmScoreRequest) -> Response:
        model = service.check_model(body.model)
        # Every text field given is checked, used or not: the schema states the text rule and maxItems for each.
        given = {name: texts_of(value, name) for name in SCORE_FIELDS if (value := getattr(body, name)) is not None}
        for name, texts in given.items():
            service.check_count(len(texts), f"texts in {name}")
        first, second = body.fields()
        queries, documents = given[first], given[second]
        if not queries or not documents:
            raise BadRequest("score needs at least one query and one document")
        if len(queries) not in (1, len(documents)):
            raise BadRequest(f"{len(queries)} queries for {len(documents)} documents: give one query, or one per "
                             "document (pairs)")
        pairs = len(queries) > 1
        scores, tokens = await service.score(queries, documents, pairs=pairs,
                                             max_document_tokens=truncation_tokens(body.truncate_prompt_tokens),
                                             truncation_side=truncation_side_of(body.truncation_side))
        values = scores if pairs else scores[0]
        return _json({
            "id": f"score-{uuid.uuid4().hex}", "object": "list", "created": int(time.time()), "model": model,
            "data": [{"index": i, "object": "score", "score": float(s)} for i, s in enumerate(values)],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0},
        })

    for path in ("/score", "/v1/score"):
        router.add_api_route(path, score, methods=["POST"], tags=["vllm"],
                             summary="vLLM score: MaxSim of 1 query x N documents, or of N pairs")

    @router.post("/pooling", tags=["vllm"], summary="vLLM pooling, task token_embed: one vector per token")
    async def pooling(body: VllmPoolingRequest) -> Response:
        model = service.check_model(body.model)
        texts = texts_of(body.input, "input")
        if not texts:
            raise BadRequest("input is empty; pass a string or a non-empty list of strings")
        dim = service.default_dim if body.dimensions is None else body.dimensions
        truncation = truncation_tokens(body.truncate_prompt_tokens) if body.embedding_mode == "document" else None
        encoded = await service.encode(texts, body.embedding_mode, dim, max_document_tokens=truncation,
                                       truncation_side=truncation_side_of(body.truncation_side))
        data = [
            {"index": i, "object": "pooling", "data": (
                np.ascontiguousarray(v, dtype=np.float32) if body.encoding_format == "float"
                else base64.b64encode(embedding_bytes(v, body.embed_dtype, body.endianness)).decode("ascii"))}
            for i, v in enumerate(encoded.vectors)
        ]
        usage = {"prompt_tokens": encoded.total_tokens, "total_tokens": encoded.total_tokens, "completion_tokens": 0}
        return _json({"id": f"pool-{uuid.uuid4().hex}", "object": "list", "created": int(time.time()),
                      "model": model, "data": data, "usage": usage})

    return router
