"""The model behind the HTTP API: encoders per dim, token accounting, limits and micro-batchers.

Each request is tokenized once (ColbertEncoder.tokenize); its limits are checked on those ids and its
usage is their token count; the micro-batcher of its (input_type, dim) merges the tokenized batches of
waiting requests and runs ColbertEncoder.encode_ids on them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ..errors import UnsupportedDimError
from ..model_folder import open_model_folder
from ..ranking import rank
from ..scoring import maxsim
from ..tokenization import TEXT_KINDS, TokenizedBatch
from ..windows import UNTRUNCATED
from .batching import MicroBatcher
from .config import ServerConfig

INPUT_TYPES = TEXT_KINDS
# Below this many characters a request is tokenized on the event loop; above, on a thread.
_INLINE_TOKENIZE_CHARS = 4096


class Encoder(Protocol):
    """The part of ColbertEncoder the server uses (tests may pass a stand-in)."""

    def tokenize(self, texts: Sequence[str], kind: str) -> TokenizedBatch: ...  # also max_length=, truncation_side=

    def encode_ids(self, batch: TokenizedBatch) -> list[np.ndarray]: ...


EncoderFactory = Callable[[int], Encoder]


class LimitExceeded(Exception):
    """A request is over a configured limit (HTTP `status`: 413), named in the answer with its value and maximum."""

    status = 413

    def __init__(self, limit: str, value: int, maximum: int, what: str) -> None:
        super().__init__(f"{what}: {value} > {limit}={maximum}")
        self.limit, self.value, self.maximum = limit, value, maximum


class TooManyInputs(LimitExceeded):
    """A list longer than max_inputs_per_request, which the schema states as its `maxItems`: a body the schema
    refuses, so 422 like every other (FastAPI's and schemathesis's reading; TEI answers its batch limit with 422)."""

    status = 422


class NotReady(Exception):
    """The model is still loading (or failed to load); HTTP 503."""


class BadRequest(Exception):
    """A well-formed request asks for something this server cannot do (HTTP 422)."""


@dataclass(frozen=True)
class Encoded:
    """Vectors of one request's texts, with the tokens it was billed."""

    vectors: list[np.ndarray]
    total_tokens: int


class ModelService:
    """Loads encoders (default dim at startup, others on first use) and serves batched requests."""

    def __init__(self, config: ServerConfig, encoder_factory: EncoderFactory | None = None) -> None:
        self.config = config
        folder = open_model_folder(config.model_dir)
        self.folder_dims = folder.dims
        self.precisions = folder.precisions
        self.root_model = folder.manifest.model
        self.query_length = folder.manifest.query.max_length  # vectors per query (TEI's normalized score)
        self.served_model_names = config.model_names(self.root_model)
        self.model_name = self.served_model_names[0]  # echoed when a request names no model
        self.created = int(time.time())
        if config.dims:
            missing = sorted(set(config.dims) - set(self.folder_dims))
            if missing:
                raise UnsupportedDimError(
                    f"dims {missing} are not in {config.model_dir} (available: {self.folder_dims})"
                )
            self.dims = sorted(set(config.dims), reverse=True)
        else:
            self.dims = sorted(self.folder_dims, reverse=True)
        self.default_dim = self._default_dim(config.encoder.dim)
        self._factory = encoder_factory or self._load_encoder
        self._encoders: dict[int, Encoder] = {}
        self._locks: dict[int, asyncio.Lock] = {}
        self._batchers: dict[tuple[str, int], MicroBatcher] = {}
        self._executor = ThreadPoolExecutor(config.inference_workers, thread_name_prefix="colbert-infer")
        self.load_error: str | None = None

    def _default_dim(self, dim: int | None) -> int:
        """The head of requests that name none: the configured one, which must be served, or where none was
        configured the largest served head."""
        if dim is None:
            return self.dims[0]
        if dim in self.dims:
            return dim
        raise UnsupportedDimError(f"dim {dim} is not served here (served: {', '.join(map(str, self.dims))})")

    def _load_encoder(self, dim: int) -> Encoder:
        from colbert_onnx import ColbertEncoder

        base = self._encoders.get(self.default_dim)
        if base is not None and hasattr(base, "for_dim"):
            return base.for_dim(dim)  # shares the session: one copy of the weights for every head
        return ColbertEncoder(self.config.model_dir, dataclasses.replace(self.config.encoder, dim=dim))

    @property
    def ready(self) -> bool:
        """True once the default dim's encoder is loaded."""
        return self.default_dim in self._encoders

    @property
    def loaded_dims(self) -> list[int]:
        """Dims whose encoder is in memory."""
        return sorted(self._encoders, reverse=True)

    async def load(self, dim: int | None = None) -> Encoder:
        """The encoder of `dim` (default dim when None), loaded on a thread on first use."""
        dim = self.default_dim if dim is None else dim
        if dim in self._encoders:
            return self._encoders[dim]
        lock = self._locks.setdefault(dim, asyncio.Lock())
        async with lock:
            if dim not in self._encoders:
                try:
                    self._encoders[dim] = await asyncio.to_thread(self._factory, dim)
                except Exception as exc:
                    if dim == self.default_dim:
                        self.load_error = f"{type(exc).__name__}: {exc}"
                    raise
        return self._encoders[dim]

    async def _encoder_for(self, dim: int) -> Encoder:
        if not self.ready:
            if self.load_error:
                raise NotReady(f"model failed to load: {self.load_error}")
            raise NotReady("model is loading; retry shortly")
        return await self.load(dim)

    def check_model(self, model: str | None) -> str:
        """The name to echo back as the response's `model`; BadRequest naming the served ones if not served."""
        if model is None:
            return self.model_name
        if model not in self.served_model_names:
            raise BadRequest(f"model {model!r} is not served here; served: {', '.join(self.served_model_names)}")
        return model

    def check_dim(self, dim: Any) -> int:
        """`dim` if served, else BadRequest naming the dims this server has."""
        if isinstance(dim, bool) or not isinstance(dim, int) or dim not in self.dims:
            raise BadRequest(f"dimensions={dim!r} is not served; available: {', '.join(map(str, self.dims))}")
        return dim

    def check_count(self, n: int, what: str) -> None:
        """TooManyInputs when a request carries more than max_inputs_per_request texts."""
        if n > self.config.max_inputs_per_request:
            raise TooManyInputs("max_inputs_per_request", n, self.config.max_inputs_per_request, what)

    async def tokenize(
        self, encoder: Encoder, texts: list[str], input_type: str, max_length: int | None = None,
        truncation_side: str | None = None,
    ) -> TokenizedBatch:
        """`texts` tokenized once, as the model will run them (on a thread when they are long); `max_length`
        truncates documents further (a request's own limit, e.g. Cohere's max_tokens_per_doc); `truncation_side`
        (a request's own, e.g. vLLM's truncation_side) says where a text is cut, else the encoder's default."""
        kwargs: dict[str, Any] = {} if max_length is None else {"max_length": max_length}
        if truncation_side is not None:
            kwargs["truncation_side"] = truncation_side
        if sum(len(t) for t in texts) <= _INLINE_TOKENIZE_CHARS:
            return encoder.tokenize(texts, input_type, **kwargs)
        return await asyncio.to_thread(functools.partial(encoder.tokenize, **kwargs), texts, input_type)

    async def refuse_truncation(self, texts: list[str], field: str, kind: str) -> None:
        """LimitExceeded (413, as TEI answers `truncate: false`) naming the first of `texts` (`kind` query or
        document) longer than the model takes, which would otherwise be cut: 32 tokens a query, the server's document
        length a document (none where documents run whole in windows)."""
        self.check_count(len(texts), "texts in this request")
        encoder = await self._encoder_for(self.default_dim)
        pre = encoder.preprocessor
        if kind == "document" and encoder.long_documents == "windows":
            return
        limit, name = ((pre.query_max_length, "query_max_length") if kind == "query"
                       else (pre.document_max_length, "document_max_length"))
        whole = await asyncio.to_thread(pre.documents, texts, UNTRUNCATED)  # framed as a query is: 3 specials
        for i, tokens in enumerate(whole.lengths):
            if tokens > limit:
                item = field if len(texts) == 1 and field == "query" else f"{field}[{i}]"
                raise LimitExceeded(name, int(tokens), limit, f"tokens in {item} with truncate: false")

    def _check_tokens(self, tokens: int) -> None:
        if tokens > self.config.max_tokens_per_request:
            raise LimitExceeded(
                "max_tokens_per_request", tokens, self.config.max_tokens_per_request, "tokens in this request"
            )

    def _batcher(self, input_type: str, dim: int, encoder: Encoder) -> MicroBatcher:
        key = (input_type, dim)
        batcher = self._batchers.get(key)
        if batcher is None:
            c = self.config
            batcher = MicroBatcher(
                encoder.encode_ids,
                self._executor,
                max_batch_texts=c.max_batch_texts,
                max_wait_s=c.max_wait_ms / 1000.0,
                max_queue=c.max_queue,
                name=f"{input_type}-{dim}",
            )
            self._batchers[key] = batcher
        return batcher

    async def encode(
        self, texts: list[str], input_type: str, dim: int, max_document_tokens: int | None = None,
        truncation_side: str | None = None,
    ) -> Encoded:
        """Vectors for `texts` through the shared batcher of (input_type, dim), after the limit checks; texts over
        their length cut on `truncation_side` (None: the server's)."""
        if input_type not in INPUT_TYPES:
            raise BadRequest(f"input_type={input_type!r}; choose one of {', '.join(INPUT_TYPES)}")
        dim = self.check_dim(dim)
        self.check_count(len(texts), "inputs in this request")
        encoder = await self._encoder_for(dim)
        truncation = max_document_tokens if input_type == "document" else None
        batch = await self.tokenize(encoder, texts, input_type, truncation, truncation_side)
        self._check_tokens(batch.total_tokens)
        vectors = await self._batcher(input_type, dim, encoder).submit(batch)
        return Encoded(vectors, batch.total_tokens)

    async def rerank(
        self, query: str, documents: list[str], top_n: int | None, max_document_tokens: int | None = None,
        truncation_side: str | None = None,
    ) -> tuple[list[dict], int]:
        """Documents ranked by MaxSim against `query` with the default dim, best first, and tokens used."""
        scores, tokens = await self.score([query], documents, max_document_tokens=max_document_tokens,
                                          truncation_side=truncation_side)
        if not documents:
            return [], tokens
        return [{"index": i, "relevance_score": score} for i, score in rank(scores[0], top_n)], tokens

    async def score(
        self, queries: list[str], documents: list[str], pairs: bool = False, max_document_tokens: int | None = None,
        truncation_side: str | None = None,
    ) -> tuple[np.ndarray, int]:
        """MaxSim with the default dim of every query with every document, (n_queries, n_documents), or with
        `pairs` of query i with document i, (n,); and the tokens used. max_inputs_per_request counts the
        documents (plus any queries past the first; pairs: the pairs), so that it is the schema's maxItems.
        Queries and documents over their lengths are cut on `truncation_side` (None: the server's)."""
        dim = self.default_dim
        self.check_count(len(documents) + (0 if pairs else len(queries) - 1), "documents in this request")
        encoder = await self._encoder_for(dim)
        query_batch = await self.tokenize(encoder, queries, "query", truncation_side=truncation_side)
        docs = await self.tokenize(encoder, documents, "document", max_document_tokens, truncation_side)
        tokens = query_batch.total_tokens + docs.total_tokens
        self._check_tokens(tokens)
        if not documents:
            return np.zeros((len(queries), 0), dtype=np.float32), tokens
        query_vectors, doc_vectors = await asyncio.gather(
            self._batcher("query", dim, encoder).submit(query_batch),
            self._batcher("document", dim, encoder).submit(docs),
        )
        if pairs:
            def paired() -> np.ndarray:
                return np.array([maxsim(q, [d])[0] for q, d in zip(query_vectors, doc_vectors, strict=True)])

            return (await asyncio.to_thread(paired) if len(documents) > 64 else paired()), tokens

        def every() -> np.ndarray:
            return np.stack([maxsim(q, doc_vectors) for q in query_vectors])

        if len(queries) * len(documents) * len(doc_vectors[0]) > 4096:
            return await asyncio.to_thread(every), tokens
        return every(), tokens

    def stats(self) -> dict[str, Any]:
        """Queue depths and batch counters per batcher."""
        return {
            name: {"queued": b.queued, "batches": b.batches_run, "texts": b.texts_run}
            for (kind, dim), b in self._batchers.items()
            for name in [f"{kind}-{dim}"]
        }

    async def close(self) -> None:
        """Stop the batchers, then wait for the inference threads to finish their runs."""
        for batcher in list(self._batchers.values()):
            await batcher.close()
        await asyncio.to_thread(self._executor.shutdown, True)
