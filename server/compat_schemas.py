"""Request bodies of the Cohere, Hugging Face TEI and vLLM rerank/score/pooling shapes (pydantic; OpenAPI).

Each keeps the fields its API documents; fields this server does not use are ignored, as for Jina's bodies.
Shapes read from the APIs' own code: the cohere SDK 5.21 (``v2/raw_client.py`` rerank), TEI's ``/rerank``
(``query``, ``texts``, ``raw_scores``, ``return_text``, ``truncate``, ``truncation_direction``), vLLM's
``entrypoints/pooling/scoring/protocol.py`` and ``pooling/protocol.py`` (docs/server.md, "Other rerank APIs").
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, StrictBool, StrictStr, model_validator
from pydantic_core import PydanticCustomError

from .schemas import TextInput

Texts = StrictStr | list[StrictStr]


class CohereRerankRequest(BaseModel):
    """POST /v2/rerank (Cohere v2; the cohere SDK's ClientV2.rerank)."""

    model_config = ConfigDict(extra="ignore")
    model: StrictStr = Field(..., examples=["rerank-v3.5"])
    query: StrictStr = Field(..., examples=["What is the population of Berlin?"])
    documents: list[StrictStr | TextInput]
    top_n: PositiveInt | None = Field(None, description="return only the best top_n (default: all)")
    max_tokens_per_doc: PositiveInt | None = Field(
        None, description="truncate each document to this many tokens (framing included) when below the server's"
    )
    return_documents: StrictBool | None = Field(None, description="include document.text (default false, Cohere's)")
    priority: int | None = Field(None, description="accepted and ignored: every request is queued alike")


class TeiRerankRequest(BaseModel):
    """POST /rerank in Hugging Face text-embeddings-inference's shape (told apart from vLLM's by `texts`)."""

    model_config = ConfigDict(extra="ignore")
    query: StrictStr = Field(..., examples=["What is the population of Berlin?"])
    texts: list[StrictStr]
    raw_scores: StrictBool = Field(False, description="true: MaxSim; false (default): MaxSim / query vectors (32)")
    return_text: StrictBool = Field(False, description="include each text")
    truncate: StrictBool | None = Field(None, description="accepted: documents are always truncated at the server's "
                                        "document length (8192 by default), as on every endpoint")
    truncation_direction: Literal["Right", "right"] | None = Field(None, description="only Right is served")

    @model_validator(mode="before")
    @classmethod
    def _not_vllm(cls, data: Any) -> Any:
        if isinstance(data, dict) and "documents" in data:
            raise PydanticCustomError("shape", "TEI's /rerank takes `texts`, not `documents` (vLLM's shape)")
        return data


class VllmRerankRequest(BaseModel):
    """POST /rerank in vLLM's (Jina/Cohere-like) shape: `documents`, `top_n` 0 = all."""

    model_config = ConfigDict(extra="ignore")
    model: StrictStr | None = Field(None, examples=["jinaai/jina-colbert-v2"])
    query: StrictStr | TextInput = Field(..., examples=["What is the population of Berlin?"])
    documents: list[StrictStr | TextInput]
    top_n: int = Field(0, ge=0, description="return only the best top_n; 0 (default): all")
    truncate_prompt_tokens: int | None = Field(
        None, ge=-1, description="truncate each document to this many tokens; -1 or none: the server's length"
    )

    @model_validator(mode="before")
    @classmethod
    def _not_tei(cls, data: Any) -> Any:
        if isinstance(data, dict) and "texts" in data:
            raise PydanticCustomError("shape", "vLLM's /rerank takes `documents`, not `texts` (TEI's shape)")
        return data


# vLLM's /score: one of these pairs of fields, first = queries, second = documents.
SCORE_PAIRS = (("text_1", "text_2"), ("queries", "documents"), ("queries", "items"), ("data_1", "data_2"))


class VllmScoreRequest(BaseModel):
    """POST /score and /v1/score (vLLM): 1 query x N documents, or N x N pairs."""

    model_config = ConfigDict(extra="ignore")
    model: StrictStr | None = Field(None, examples=["jinaai/jina-colbert-v2"])
    text_1: Texts | None = Field(None, examples=["What is the population of Berlin?"])
    text_2: Texts | None = Field(None, examples=[["Berlin has 3.8 million inhabitants."]])
    queries: Texts | None = None
    documents: Texts | None = None
    items: Texts | None = None
    data_1: Texts | None = None
    data_2: Texts | None = None
    truncate_prompt_tokens: int | None = Field(None, ge=-1, description="as for /rerank")

    def _given(self) -> list[tuple[str, str]]:
        return [p for p in SCORE_PAIRS if getattr(self, p[0]) is not None and getattr(self, p[1]) is not None]

    @model_validator(mode="after")
    def _one_pair(self) -> VllmScoreRequest:
        if len(self._given()) != 1:
            names = " | ".join(f"{a} + {b}" for a, b in SCORE_PAIRS)
            raise PydanticCustomError("score_pair", f"give exactly one pair of fields: {names}")
        return self

    def texts(self) -> tuple[list[str], list[str]]:
        """(queries, documents) as lists."""
        ((first, second),) = self._given()
        a, b = getattr(self, first), getattr(self, second)
        return ([a] if isinstance(a, str) else list(a)), ([b] if isinstance(b, str) else list(b))


class VllmPoolingRequest(BaseModel):
    """POST /pooling (vLLM) with task token_embed: one vector per token, as /v1/multi-vector."""

    model_config = ConfigDict(extra="ignore")
    model: StrictStr | None = Field(None, examples=["jinaai/jina-colbert-v2"])
    input: Texts = Field(..., examples=[["Berlin has 3.8 million inhabitants."]])
    task: Literal["token_embed"] | None = Field(None, description="token_embed (default): per-token vectors")
    embedding_mode: Literal["query", "document"] = Field(
        "document", description="vLLM's ColBERT mode: query (32 vectors) or document (default)"
    )
    encoding_format: Literal["float", "base64"] = Field("float", description="base64: little-endian float32")
    dimensions: int | None = Field(None, description="Matryoshka head: 128 (default), 96 or 64")
    truncate_prompt_tokens: int | None = Field(None, ge=-1, description="documents: as for /rerank")
