"""FastAPI application: Jina-compatible /v1/multi-vector and /v1/rerank, plus models, health and ready."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import email.message
import logging
import secrets
from collections.abc import AsyncIterator
from typing import Any

import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__
from ..compact import to_muvera
from ..errors import ColbertOnnxError, InvalidInputError
from .batching import Overloaded, ShuttingDown
from .compat import ENDPOINTS as COMPAT_ENDPOINTS
from .compat import compat_router, vllm_rerank_answer
from .config import ServerConfig
from .content_coding import (
    ACCEPT_ENCODING,
    DecodedTooLarge,
    UndecodableBody,
    UnsupportedCoding,
    applied_codings,
    decode_body,
)
from .formats import encode_vectors
from .schemas import (
    BODY_STATUSES,
    MODEL_ENDPOINT_STATUSES,
    RETRY_AFTER_HEADER,
    ErrorBody,
    MultiVectorRequest,
    MultiVectorResponse,
    RerankRequest,
    RerankResponse,
    error_responses,
    served_openapi,
    texts_of,
)
from .service import BadRequest, EncoderFactory, LimitExceeded, ModelService, NotReady

log = logging.getLogger("colbert_onnx.server")

def json_response(content: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON response serialized with orjson (numpy arrays included)."""
    return Response(
        orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY),
        status_code=status_code,
        media_type="application/json",
        headers=headers,
    )


def _error(status: int, detail: str, headers: dict[str, str] | None = None, **extra: Any) -> Response:
    return json_response({"detail": detail, **extra}, status, headers)


def parsed_as_json(content_type: bytes) -> bool:
    """Whether FastAPI parses a body declared `content_type` as JSON: application/json or application/*+json, as
    its request routing decides (text/json or application/jsonx it would hand over as bytes, and answer 422)."""
    message = email.message.Message()
    message["content-type"] = content_type.decode("latin-1")
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


class BodyLimitMiddleware:
    """Rejects request bodies over `max_bytes` with 413 before the app reads them (any transfer encoding), and
    decodes a `Content-Encoding` (gzip, deflate) within the same limit or refuses it by name (content_coding)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        # the first Content-Type, as Starlette reads it (dict() would keep the last of several)
        content_type = next((v for k, v in scope["headers"] if k == b"content-type"), b"")
        if not parsed_as_json(content_type):
            # The API only speaks JSON: parse it as such whatever the client declared (curl -d sends form).
            scope = dict(scope)
            scope["headers"] = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
            scope["headers"].append((b"content-type", b"application/json"))
        try:
            applied = applied_codings(b",".join(v for k, v in scope["headers"] if k == b"content-encoding"))
        except UnsupportedCoding as exc:
            await _error(415, str(exc), {"Accept-Encoding": ACCEPT_ENCODING})(scope, receive, send)
            return
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(scope, receive, send, int(declared))
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._reject(scope, receive, send, size)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if applied:
            try:
                body = decode_body(body, applied, self.max_bytes)
            except UndecodableBody as exc:
                await _error(400, str(exc))(scope, receive, send)
                return
            except DecodedTooLarge as exc:
                detail = f"{exc}; max_body_bytes={self.max_bytes}"
                response = _error(413, detail, limit="max_body_bytes", value=exc.size, max=self.max_bytes)
                await response(scope, receive, send)
                return
            scope = dict(scope)
            stale = (b"content-encoding", b"content-length")
            scope["headers"] = [(k, v) for k, v in scope["headers"] if k not in stale]
            scope["headers"].append((b"content-length", str(len(body)).encode()))
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send, size: int) -> None:
        response = _error(
            413,
            f"request body is {size}+ bytes; max_body_bytes={self.max_bytes}",
            limit="max_body_bytes",
            value=size,
            max=self.max_bytes,
        )
        await response(scope, receive, send)


class HeadMiddleware:
    """HEAD answered as GET without the body (RFC 9110 9.3.2: general-purpose servers support GET and HEAD; load
    balancers probe with it), and HEAD named beside GET in every 405's `Allow`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        head = scope["method"] == "HEAD"
        if head:
            scope = dict(scope, method="GET")

        async def send_as_asked(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = dict(message, headers=[_allow_head(k, v) for k, v in message.get("headers", [])])
            elif head and message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.app(scope, receive, send_as_asked)


def _allow_head(name: bytes, value: bytes) -> tuple[bytes, bytes]:
    methods = [m.strip() for m in value.split(b",")]
    if name.lower() == b"allow" and b"GET" in methods and b"HEAD" not in methods:
        return name, b", ".join([*methods, b"HEAD"])
    return name, value


class Drain:
    """Requests in flight and whether the server is draining: after SIGTERM (main.GracefulServer) requests in
    flight finish while new ones get 503, then the process exits."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.draining = False

    def begin(self) -> None:
        """Stop taking new requests (503 with Retry-After); those in flight go on."""
        self.draining = True


class DrainMiddleware:
    """Counts the HTTP requests in flight; while draining, answers new ones 503 (probes excepted)."""

    PROBES = ("/health", "/ready")  # liveness stays 200; /ready says "draining" with 503 itself

    def __init__(self, app: ASGIApp, drain: Drain, retry_after_s: int) -> None:
        self.app = app
        self.drain = drain
        self.headers = {"Retry-After": str(retry_after_s), "Connection": "close"}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.drain.draining and scope["path"] not in self.PROBES:
            response = _error(503, "server is shutting down; retry on another instance", self.headers)
            await response(scope, receive, send)
            return
        self.drain.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.drain.in_flight -= 1


def _validation_message(errors: list[dict[str, Any]]) -> str:
    parts = []
    for err in errors[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{loc or 'body'}: {err.get('msg', 'invalid')}")
    more = f" (+{len(errors) - 5} more)" if len(errors) > 5 else ""
    return "; ".join(parts) + more


def single_vector_message(model: str) -> str:
    """What a single-vector client (OpenAI/Jina /v1/embeddings) is told: where the vectors are instead."""
    return (
        f"/v1/embeddings is not served: {model} is a multi-vector (late-interaction, ColBERT) model with one "
        "vector per token and no pooled single vector. Call POST /v1/multi-vector with "
        f'{{"model": "{model}", "input": ["..."], "input_type": "document"}} (or "query") for the token '
        'vectors, scored with MaxSim, or POST /v1/rerank with {"query": "...", "documents": ["..."]} to rank.'
    )


def create_app(config: ServerConfig, encoder_factory: EncoderFactory | None = None) -> FastAPI:
    """The ASGI app for `config`; `encoder_factory(dim)` replaces ColbertEncoder loading (tests)."""
    service = ModelService(config, encoder_factory)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loading = asyncio.get_running_loop().create_task(service.load())
        loading.add_done_callback(_log_load_result)
        app.state.loading = loading
        try:
            yield
        finally:
            if not loading.done():
                loading.cancel()
            await service.close()

    def _log_load_result(task: asyncio.Task) -> None:
        if task.cancelled():
            return
        if task.exception() is not None:
            log.error("loading %s failed: %s", config.model_dir, task.exception())
        else:
            log.info("model %s ready (dim %d)", service.model_name, service.default_dim)

    app = FastAPI(
        title="colbert-onnx",
        version=__version__,
        description="Jina-API-compatible multi-vector embeddings and reranking with jina-colbert-v2 on onnxruntime.",
        lifespan=lifespan,
    )
    app.state.service = service
    app.state.drain = drain = Drain()
    app.add_middleware(HeadMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_bytes=config.max_body_bytes)
    app.add_middleware(DrainMiddleware, drain=drain, retry_after_s=config.retry_after_s)  # outermost

    def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
        return error_responses(*statuses, api_key=config.api_key is not None)

    fastapi_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        """FastAPI's schema, made exact for the served folder (names, heads, max inputs): schemas.served_openapi."""
        if app.openapi_schema is None:
            app.openapi_schema = served_openapi(
                fastapi_openapi(),
                service.served_model_names,
                service.dims,
                config.max_inputs_per_request,
                api_key=config.api_key is not None,
            )
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    bearer = HTTPBearer(auto_error=False, description="API key, when the server was started with one")

    async def authorize(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:  # noqa: B008
        if config.api_key is None:
            return
        given = credentials.credentials if credentials is not None else ""
        if not secrets.compare_digest(given.encode(), config.api_key.encode()):
            raise StarletteHTTPException(
                401,
                "missing or wrong API key: send 'Authorization: Bearer <key>'",
                headers={"WWW-Authenticate": "Bearer"},
            )

    retry = {"Retry-After": str(config.retry_after_s)}

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, exc: RequestValidationError) -> Response:
        errors = list(exc.errors())
        if any(e.get("type") == "json_invalid" for e in errors):
            return _error(400, f"malformed JSON body: {_validation_message(errors)}")
        return _error(422, _validation_message(errors))

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> Response:
        return _error(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(LimitExceeded)
    async def on_limit(request: Request, exc: LimitExceeded) -> Response:
        return _error(exc.status, str(exc), limit=exc.limit, value=exc.value, max=exc.maximum)

    @app.exception_handler(BadRequest)
    async def on_bad(request: Request, exc: BadRequest) -> Response:
        return _error(422, str(exc))

    @app.exception_handler(InvalidInputError)
    async def on_invalid(request: Request, exc: InvalidInputError) -> Response:
        return _error(422, str(exc))

    @app.exception_handler(NotReady)
    async def on_not_ready(request: Request, exc: NotReady) -> Response:
        return _error(503, str(exc), headers=retry)

    @app.exception_handler(Overloaded)
    async def on_overloaded(request: Request, exc: Overloaded) -> Response:
        return _error(429, f"server busy: {exc}; retry later", headers=retry, limit="max_queue")

    @app.exception_handler(ShuttingDown)
    async def on_shutdown(request: Request, exc: ShuttingDown) -> Response:
        return _error(503, f"server is shutting down: {exc}", headers=retry)

    @app.exception_handler(ColbertOnnxError)
    async def on_colbert(request: Request, exc: ColbertOnnxError) -> Response:
        log.exception("model error", exc_info=exc)
        return _error(500, f"model error: {exc}")

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> Response:  # a bug: still JSON, as documented
        log.exception("unexpected error", exc_info=exc)
        return _error(500, f"internal error ({type(exc).__name__}); please report it")

    @app.get("/health", tags=["ops"], summary="liveness: the process answers")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/ready",
        tags=["ops"],
        summary="readiness: 200 once the model is loaded, else 503 (loading, failed or shutting down)",
        responses={503: {"description": "loading, failed to load, or draining", "headers": RETRY_AFTER_HEADER}},
    )
    async def ready() -> Response:
        ok = service.ready and not drain.draining
        body = {
            "status": "draining" if drain.draining else "ready" if service.ready else "loading",
            "model": service.model_name,
            "served_model_names": list(service.served_model_names),
            "dimensions": service.dims,
            "loaded_dimensions": service.loaded_dims,
            "queues": service.stats(),
        }
        if service.load_error:
            body.update(status="failed", error=service.load_error)
        return json_response(body, 200 if ok else 503, None if ok else retry)

    @app.get("/v1/models", tags=["jina"], dependencies=[Depends(authorize)], responses=errors(503))
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {
                    "id": name,
                    "object": "model",
                    "root": service.root_model,
                    "created": service.created,
                    "owned_by": "colbert-onnx",
                    "dimensions": service.dims,
                    "default_dimensions": service.default_dim,
                    "precision": config.encoder.precision,
                    "precisions_available": service.precisions,
                    "endpoints": ["/v1/multi-vector", "/v1/rerank", *COMPAT_ENDPOINTS],
                }
                for name in service.served_model_names
            ],
        }

    @app.post(
        "/v1/multi-vector",
        tags=["jina"],
        dependencies=[Depends(authorize)],
        response_model=MultiVectorResponse,
        responses=errors(*MODEL_ENDPOINT_STATUSES),
        summary="one vector per token (documents) or 32 per query",
    )
    async def multi_vector(body: MultiVectorRequest) -> Response:
        model = service.check_model(body.model)
        texts = texts_of(body.input, "input")
        if not texts:
            raise BadRequest("input is empty; pass a string or a non-empty list of strings")
        input_type = body.resolved_input_type()
        embedding_type = body.resolved_embedding_type()
        dim = service.default_dim if body.dimensions is None else body.dimensions
        if body.truncate is False:  # an explicit "do not cut": refused where a text would be cut
            await service.refuse_truncation(texts, "input", input_type)
        encoded = await service.encode(texts, input_type, dim)
        if embedding_type == "muvera":  # one vector per text (runtime/muvera.py), made off the event loop
            fdes = await asyncio.to_thread(to_muvera, encoded.vectors, config.muvera, input_type)
            encoded = dataclasses.replace(encoded, vectors=fdes)
            embedding_type = "float"
        data = [
            {"object": "embeddings", "index": i, "embeddings": encode_vectors(v, embedding_type)}
            for i, v in enumerate(encoded.vectors)
        ]
        usage = {"total_tokens": encoded.total_tokens}
        return json_response({"model": model, "object": "list", "usage": usage, "data": data})

    @app.post(
        "/v1/rerank",
        tags=["jina"],
        dependencies=[Depends(authorize)],
        response_model=RerankResponse,
        responses=errors(*MODEL_ENDPOINT_STATUSES),
        summary="documents ranked by MaxSim against the query, best first",
    )
    async def rerank(body: RerankRequest) -> Response:
        return json_response(await vllm_rerank_answer(service, body, with_documents=body.return_documents is not False))

    @app.post(
        "/v1/embeddings",
        tags=["jina"],
        dependencies=[Depends(authorize)],
        status_code=404,
        responses={
            404: {"model": ErrorBody, "description": "always: this model has no single-vector embeddings"},
            **errors(*BODY_STATUSES, 503),
        },
        summary="not served: single-vector clients are told to call /v1/multi-vector",
    )
    async def embeddings() -> Response:
        return _error(404, single_vector_message(service.model_name))

    app.include_router(compat_router(service, authorize))  # Cohere, TEI, vLLM shapes (server/compat.py)

    return app
