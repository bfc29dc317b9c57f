"""Request and response bodies of the Jina-compatible endpoints (pydantic; also the OpenAPI schema)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, StrictBool, StrictStr, field_validator, model_validator
from pydantic_core import PydanticCustomError

EmbeddingType = Literal["float", "base64", "binary", "ubinary", "muvera"]
# Jina's v3-style `task` values that name an input_type of this model; any other task is refused.
TASK_INPUT_TYPES = {"retrieval.query": "query", "retrieval.passage": "document"}
# The request fields that name the response encoding: Jina's, its older spelling, OpenAI's.
EMBEDDING_TYPE_FIELDS = ("embedding_type", "encoding_type", "encoding_format")


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
    task: StrictStr | None = Field(
        None,
        description="Jina v3-style alternative to input_type: retrieval.query = query, retrieval.passage = document "
        "(an explicit input_type wins); any other task is refused",
    )
    embedding_type: EmbeddingType | None = Field(
        None,
        description="float (default); base64: little-endian float32 per vector; binary/ubinary: packed sign bits; "
        "muvera: one MUVERA fixed-dimensional encoding per text (the server's --muvera spec)",
    )
    encoding_type: EmbeddingType | None = Field(None, description="alias of embedding_type")
    encoding_format: EmbeddingType | None = Field(None, description="OpenAI's name; alias of embedding_type")
    dimensions: int | None = Field(None, description="Matryoshka head: 128 (default), 96 or 64 when the folder has it")

    @field_validator("task")
    @classmethod
    def _known_task(cls, task: str | None) -> str | None:
        if task is not None and task not in TASK_INPUT_TYPES:
            accepted = ", ".join(f"{t} (input_type={kind})" for t, kind in TASK_INPUT_TYPES.items())
            message = f"task {task!r} is not served by this multi-vector model; accepted: {accepted}"
            raise PydanticCustomError("unsupported_task", message)
        return task

    @model_validator(mode="after")
    def _one_embedding_type(self) -> MultiVectorRequest:
        given = {name: getattr(self, name) for name in EMBEDDING_TYPE_FIELDS if getattr(self, name) is not None}
        if len(set(given.values())) > 1:
            conflict = " and ".join(f"{name}={value!r}" for name, value in given.items())
            raise PydanticCustomError("conflicting_embedding_type", f"{conflict} disagree; give one encoding")
        return self

    def resolved_input_type(self) -> str:
        """input_type if given, else the one `task` names, else document."""
        if self.input_type is not None:
            return self.input_type
        if self.task is not None:
            return TASK_INPUT_TYPES[self.task]
        return "document"

    def resolved_embedding_type(self) -> str:
        """The one encoding the request asked for under any of its names (they agree), float by default."""
        return next((getattr(self, n) for n in EMBEDDING_TYPE_FIELDS if getattr(self, n) is not None), "float")


class Usage(BaseModel):
    """Tokens processed for the request."""

    total_tokens: int


class MultiVectorItem(BaseModel):
    """The vectors of one input text."""

    object: Literal["embeddings"] = "embeddings"
    index: int
    embeddings: list[list[float]] | list[str] | list[list[int]] | list[float]  # muvera: one vector


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
    rank_fields: list[StrictStr] | None = Field(None, description="Cohere v1's; only ['text'] is served")

    @field_validator("rank_fields")
    @classmethod
    def _text_only(cls, fields: list[str] | None) -> list[str] | None:
        if fields is not None and fields != ["text"]:
            message = f"rank_fields={fields!r} is not served: documents are strings or {{'text'}} objects, ranked by "
            message += "their text"
            raise PydanticCustomError("rank_fields", message)
        return fields


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
