"""Request and response bodies of the Jina-compatible endpoints (pydantic; also the OpenAPI schema)."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, PositiveInt, StrictBool, StrictStr


class TextInput(BaseModel):
    """An input given as an object, as Jina also accepts: {"text": "..."}."""

    model_config = ConfigDict(extra="ignore")
    text: StrictStr


class MultiVectorRequest(BaseModel):
    """POST /v1/multi-vector (fields Jina's API has and this server does not use are ignored)."""

    model_config = ConfigDict(extra="ignore")
    model: StrictStr | None = Field(None, examples=["jina-colbert-v2"])
    input: StrictStr | list[StrictStr | TextInput] = Field(..., examples=[["What is the population of Berlin?"]])
    input_type: Literal["query", "document"] | None = Field(
        None, description="query: 32 vectors per text (mask-augmented); document (default): one per kept token"
    )
    embedding_type: Literal["float", "base64", "binary", "ubinary"] | None = Field(
        None,
        validation_alias=AliasChoices("embedding_type", "encoding_type"),
        description="float (default); base64: little-endian float32 per vector; binary/ubinary: packed sign bits",
    )
    dimensions: int | None = Field(None, description="Matryoshka head: 128 (default), 96 or 64 when the folder has it")


class Usage(BaseModel):
    """Tokens processed for the request."""

    total_tokens: int


class MultiVectorItem(BaseModel):
    """The vectors of one input text."""

    object: Literal["embeddings"] = "embeddings"
    index: int
    embeddings: list[list[float]] | list[str] | list[list[int]]


class MultiVectorResponse(BaseModel):
    """Response of POST /v1/multi-vector."""

    model: str
    object: Literal["list"] = "list"
    usage: Usage
    data: list[MultiVectorItem]


class RerankRequest(BaseModel):
    """POST /v1/rerank."""

    model_config = ConfigDict(extra="ignore")
    model: StrictStr | None = Field(None, examples=["jina-colbert-v2"])
    query: StrictStr | TextInput = Field(..., examples=["What is the population of Berlin?"])
    documents: list[StrictStr | TextInput]
    top_n: PositiveInt | None = Field(None, description="return only the best top_n (default: all)")
    return_documents: StrictBool | None = Field(None, description="include document.text (default true)")


class RerankDocument(BaseModel):
    """The document text echoed back."""

    text: str


class RerankResult(BaseModel):
    """One ranked document."""

    index: int
    relevance_score: float
    document: RerankDocument | None = None


class RerankResponse(BaseModel):
    """Response of POST /v1/rerank, best first."""

    model: str
    usage: Usage
    results: list[RerankResult]


class ErrorBody(BaseModel):
    """Every error response: `detail` says what is wrong; `limit` names the limit that was hit, if any."""

    detail: str
    limit: str | None = None
    value: int | None = None
    max: int | None = None
