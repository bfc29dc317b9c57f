"""Request and response bodies of the Jina-compatible endpoints (pydantic; also the OpenAPI schema), and the
contract pieces every endpoint shares: the text type, the served-value markers, the documented error statuses."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictStr,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ..text import TEXT_JSON_SCHEMA, check_text, check_texts

EmbeddingType = Literal["float", "base64", "binary", "ubinary", "muvera"]
EMBEDDING_TYPES = get_args(EmbeddingType)
# Jina's v3-style `task` values that name an input_type of this model; any other task is refused.
TASK_INPUT_TYPES = {"retrieval.query": "query", "retrieval.passage": "document"}
# The request fields that name the response encoding: Jina's, its older spelling, OpenAI's.
EMBEDDING_TYPE_FIELDS = ("embedding_type", "encoding_type", "encoding_format")

# --------------------------------------------------------------------------- shared contract pieces

# A text field: a JSON string the text rule (colbert_onnx.text) accepts. The schema states the rule's limits
# (no NUL, at most MAX_TEXT_CHARS characters); the endpoint applies the rule itself with `texts_of`, so that
# the 422 names the field and item (pydantic would report every branch of a union instead).
Text = Annotated[StrictStr, WithJsonSchema(TEXT_JSON_SCHEMA)]


def _no_bool_or_str(value: Any) -> Any:
    if isinstance(value, (bool, str)):
        kind = type(value).__name__
        raise PydanticCustomError("int_type", "Input should be a valid integer (not {kind})", {"kind": kind})
    return value


# An integer as JSON Schema defines it: 5 and 5.0 (a number with no fraction), never true or "5".
NO_BOOL_OR_STR = BeforeValidator(_no_bool_or_str)
JsonInt = Annotated[int, NO_BOOL_OR_STR]
# Bounds go before the check (`Annotated[int, Field(ge=0), NO_BOOL_OR_STR]`): after it, pydantic writes
# them into the schema as `gt`/`ge`, words JSON Schema does not know, instead of exclusiveMinimum/minimum.
PositiveJsonInt = Annotated[int, Field(gt=0), NO_BOOL_OR_STR]
# vLLM's truncate_prompt_tokens: -1 (or none) = the server's document length, else that many tokens.
TruncatePromptTokens = Annotated[int, Field(ge=-1), NO_BOOL_OR_STR]

# Fields whose schema depends on the folder being served carry this key; `served_openapi` fills in the values
# of the running server (enum of names, enum of heads, maxItems) and removes the key.
SERVED_KEY = "x-colbert-served"
ServedModelName = Annotated[
    StrictStr | None,
    Field(description="one of the served model names (default: the first)", json_schema_extra={SERVED_KEY: "model"}),
]
# The same, where the API requires the field (Cohere v2's `model`).
RequiredServedModelName = Annotated[
    StrictStr, Field(description="one of the served model names", json_schema_extra={SERVED_KEY: "model"})
]
ServedDimensions = Annotated[
    JsonInt | None,
    Field(description="Matryoshka head, one of the served dimensions (default: the server's --dim, else the largest "
                      "served: 128 in a full export)",
          json_schema_extra={SERVED_KEY: "dimensions"}),
]


# vLLM's truncation_side: where a text over its length is cut (right: its first tokens kept; left: its last); the
# framing tokens stay. None: the server's --truncation-side (right by default).
TruncationSide = Literal["left", "right"] | None
TRUNCATION_SIDE_HELP = ("vLLM's: where the query and documents over their lengths are cut: right keeps their first "
                        "tokens, left their last (<s>, marker and </s> kept); none: the server's --truncation-side "
                        "(right by default)")
# TEI's truncation_direction: "Left" / "Right" as TEI spells them, and the lowercase spellings.
TeiTruncationDirection = Literal["Left", "Right", "left", "right"] | None
# JSON Schema of a rerank body: vLLM's truncate_prompt_tokens and Cohere's max_tokens_per_doc, not both set
ONE_TRUNCATION = {"not": {"required": ["truncate_prompt_tokens", "max_tokens_per_doc"],
                          "properties": {"truncate_prompt_tokens": {"not": {"type": "null"}},
                                         "max_tokens_per_doc": {"not": {"type": "null"}}}}}


def truncation_side_of(value: str | None) -> str | None:
    """The runtime's truncation side ("left" / "right") of vLLM's truncation_side or TEI's truncation_direction;
    None (the server's default) when the request has none."""
    return None if value is None else value.lower()


def truncation_tokens(tokens: int | None) -> int | None:
    """vLLM's truncate_prompt_tokens (Cohere's max_tokens_per_doc): -1 / None = the server's document length;
    else that many tokens, at least the 3 of the framing."""
    return None if tokens is None or tokens == -1 else max(tokens, 3)



def texts_of(value: str | TextInput | Sequence[str | TextInput], field: str) -> list[str]:
    """The texts of a request field (a string, a {"text"} object, or a list of them), checked by the text rule:
    InvalidTextError naming `field` or `field[i]` (HTTP 422)."""
    if isinstance(value, (str, TextInput)):
        text = value if isinstance(value, str) else value.text
        check_text(text, field)
        return [text]
    texts = [item if isinstance(item, str) else item.text for item in value]
    check_texts(texts, field)
    return texts


ERROR_STATUSES: dict[int, str] = {
    400: "malformed JSON body, or a body that is not what its Content-Encoding says",
    401: "missing or wrong API key (the server was started with one)",
    404: "not served",
    413: "over a limit: body bytes (decoded too) or tokens per request, or a text `truncate: false` keeps from "
    "being cut; `limit` names it",
    415: "a Content-Encoding other than gzip, deflate or identity; Accept-Encoding lists those",
    422: "invalid field value (type, unserved model or dimensions, task, encoding, empty input), a list over its "
    "maxItems (`limit: max_inputs_per_request`, the served --max-inputs) or a text the text rule refuses (lone "
    "surrogate, NUL, over the length limit); `detail` names the field and item",
    429: "queue full; retry after Retry-After seconds",
    500: "model or internal error (a bug: please report it)",
    503: "model not loaded yet, or the server is shutting down; retry after Retry-After seconds",
}
# What every POST endpoint can answer from its body's transport alone (content_coding; the body limit).
BODY_STATUSES = (400, 413, 415)
# What a POST endpoint that runs the model can answer besides 200 and 401.
MODEL_ENDPOINT_STATUSES = (*BODY_STATUSES, 422, 429, 500, 503)
RETRY_AFTER_HEADER = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}}
_HEADERS = {
    401: {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}},
    415: {"Accept-Encoding": {"description": "the Content-Encodings accepted", "schema": {"type": "string"}}},
    429: RETRY_AFTER_HEADER,
    503: RETRY_AFTER_HEADER,
}


def error_responses(*statuses: int, api_key: bool) -> dict[int | str, dict[str, Any]]:
    """FastAPI `responses=` documenting `statuses` (ErrorBody, headers), plus 401 when the server asks for a key."""
    responses: dict[int | str, dict[str, Any]] = {}
    for code in sorted({*statuses, *((401,) if api_key else ())}):
        responses[code] = {"model": ErrorBody, "description": ERROR_STATUSES[code]}
        if code in _HEADERS:
            responses[code]["headers"] = _HEADERS[code]
    return responses


def served_openapi(schema: dict[str, Any], model_names: Sequence[str], dims: Sequence[int], max_inputs: int,
                   api_key: bool) -> dict:
    """The OpenAPI `schema` with every SERVED_KEY field made exact for this server: `model` an enum of
    `model_names`, `dimensions` an enum of `dims`, text lists at most `max_inputs` items; without `api_key` no
    operation asks for the bearer scheme, as the server asks for no key. Changes `schema`."""
    if not api_key:
        for operations in schema.get("paths", {}).values():
            for operation in operations.values():
                if isinstance(operation, dict):
                    operation.pop("security", None)
        schemes = schema.get("components", {}).get("securitySchemes", {})
        schemes.pop("HTTPBearer", None)
        if not schemes:
            schema.get("components", {}).pop("securitySchemes", None)
    values = {"model": ("string", {"enum": list(model_names)}), "dimensions": ("integer", {"enum": list(dims)}),
              "inputs": ("array", {"maxItems": max_inputs})}

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            role = node.pop(SERVED_KEY, None)
            if role is not None:
                kind, extra = values[role]
                for branch in [node, *node.get("anyOf", ())]:
                    if branch.get("type") == kind:
                        branch.update(extra)
                if role == "model" and "examples" in node:  # an example is a request: only served names
                    node["examples"] = [e for e in node["examples"] if e in model_names] or [model_names[0]]
            for child in node.values():
                visit(child)
        elif isinstance(node, list):
            for child in node:
                visit(child)

    visit(schema.get("components", {}))
    return schema


class TextInput(BaseModel):
    """An input given as an object, as Jina also accepts: {"text": "..."}."""

    model_config = ConfigDict(extra="ignore")
    text: Text


# Validated as a string (so that the 422 names the task and the accepted ones), documented as the enum it is.
TaskName = Annotated[StrictStr | None, WithJsonSchema({"anyOf": [{"enum": list(TASK_INPUT_TYPES)}, {"type": "null"}]})]
TextList = Annotated[list[Text | TextInput], Field(json_schema_extra={SERVED_KEY: "inputs"})]
# A list of texts given as strings only (TEI's `texts`, vLLM's score and pooling fields).
TextStrings = Annotated[list[Text], Field(json_schema_extra={SERVED_KEY: "inputs"})]

# One schema branch per encoding: the three names of the encoding may be given together only when they agree.
_AGREEING_ENCODINGS = {
    "anyOf": [
        {"properties": {name: {"enum": [value, None]} for name in EMBEDDING_TYPE_FIELDS}} for value in EMBEDDING_TYPES
    ]
}


class MultiVectorRequest(BaseModel):
    """POST /v1/multi-vector (fields Jina's API has and this server does not use are ignored)."""

    model_config = ConfigDict(extra="ignore", json_schema_extra=_AGREEING_ENCODINGS)
    model: ServedModelName = Field(None, examples=["jina-colbert-v2"])
    input: Text | TextList = Field(
        ..., examples=[["What is the population of Berlin?"]], json_schema_extra={"minItems": 1}
    )
    input_type: Literal["query", "document"] | None = Field(
        None, description="query: 32 vectors per text (mask-augmented); document (default): one per kept token"
    )
    task: TaskName = Field(
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
    dimensions: ServedDimensions = None
    truncate: StrictBool | None = Field(
        None, description="texts over what the model takes (a query: 32 tokens; a document: the server's document "
                          "length, 8192 by default): true or none, truncated; false, refused (413) instead of cut"
    )

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

    model_config = ConfigDict(extra="ignore", json_schema_extra=ONE_TRUNCATION)
    model: ServedModelName = Field(None, examples=["jina-colbert-v2"])
    query: Text | TextInput = Field(..., examples=["What is the population of Berlin?"])
    documents: TextList
    # 0 is vLLM's "all" (vLLM serves this shape at /v1/rerank too, its default top_n being 0)
    top_n: Annotated[int, Field(ge=0), NO_BOOL_OR_STR] | None = Field(
        None, description="return only the best top_n (default, or 0 as in vLLM: all)"
    )
    return_documents: StrictBool | None = Field(None, description="include document.text (default true)")
    truncate_prompt_tokens: TruncatePromptTokens | None = Field(
        None, description="vLLM's: truncate each document to this many tokens (framing included, at least 3) when "
                          "below the server's length; -1 or none: the server's length"
    )
    truncation_side: TruncationSide = Field(None, description=TRUNCATION_SIDE_HELP)
    max_tokens_per_doc: PositiveJsonInt | None = Field(
        None, description="Cohere's name of truncate_prompt_tokens (give one of them)"
    )
    truncate: StrictBool | None = Field(None, description="false: a text the server would cut is refused (413), "
                                                          "as on /v1/multi-vector; true or none: cut")
    rank_fields: Annotated[
        list[StrictStr] | None,
        WithJsonSchema({"anyOf": [{"type": "array", "items": {"enum": ["text"]}, "minItems": 1, "maxItems": 1},
                                  {"type": "null"}]}),
    ] = Field(None, description="Cohere v1's; only ['text'] is served")

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


class RerankUsage(Usage):
    """Tokens processed for the request (`prompt_tokens`, vLLM's name, is the same count)."""

    prompt_tokens: int


class RerankResponse(BaseModel):
    """Response of POST /v1/rerank, best first (`id` as vLLM's and Cohere's responses have one)."""

    id: str
    model: str
    usage: RerankUsage
    results: list[RerankResult]


class ErrorBody(BaseModel):
    """Every error response: `detail` says what is wrong; `limit` names the limit that was hit, if any."""

    detail: str
    limit: str | None = None
    value: int | None = None
    max: int | None = None
