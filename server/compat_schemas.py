"""Request bodies of the Cohere, Hugging Face TEI and vLLM rerank/score/pooling shapes (pydantic; OpenAPI).

Each keeps the fields its API documents; fields this server does not use are ignored, as for Jina's bodies.
Shapes read from the APIs' own code: the cohere SDK 5.21 (``v2/raw_client.py`` rerank), TEI's ``/rerank``
(``query``, ``texts``, ``raw_scores``, ``return_text``, ``truncate``, ``truncation_direction``), vLLM's
``entrypoints/pooling/scoring/protocol.py`` and ``pooling/protocol.py`` (docs/server.md, "Other rerank APIs").
The contract is the Jina bodies' (server/schemas.py): texts are `Text` / `TextList` / `TextStrings`, checked
by the text rule in the route (`texts_of`), model names `ServedModelName`, heads `ServedDimensions`, integers
`JsonInt`, booleans strict; what the server refuses beyond field types is stated in the schema too.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator
from pydantic_core import PydanticCustomError

from .schemas import (
    NO_BOOL_OR_STR,
    ONE_TRUNCATION,
    TRUNCATION_SIDE_HELP,
    JsonInt,
    PositiveJsonInt,
    RequiredServedModelName,
    ServedDimensions,
    ServedModelName,
    TeiTruncationDirection,
    Text,
    TextInput,
    TextList,
    TextStrings,
    TruncatePromptTokens,
    TruncationSide,
)

# A score field: one text, or a non-empty list of texts.
ScoreTexts = Text | Annotated[TextStrings, Field(min_length=1)]


def _without(field: str) -> dict[str, Any]:
    """JSON Schema: a body that has no `field` (the other shape of a shared path)."""
    return {"not": {"required": [field]}}


class CohereRerankRequest(BaseModel):
    """POST /v2/rerank (Cohere v2; the cohere SDK's ClientV2.rerank)."""

    model_config = ConfigDict(extra="ignore", json_schema_extra=ONE_TRUNCATION)
    model: RequiredServedModelName = Field(..., examples=["rerank-v3.5"])
    query: Text = Field(..., examples=["What is the population of Berlin?"])
    documents: TextList
    top_n: PositiveJsonInt | None = Field(None, description="return only the best top_n (default: all)")
    max_tokens_per_doc: PositiveJsonInt | None = Field(
        None, description="truncate each document to this many tokens (framing included) when below the server's"
    )
    return_documents: StrictBool | None = Field(None, description="include document.text (default false, Cohere's)")
    priority: JsonInt | None = Field(None, description="accepted and ignored: every request is queued alike")
    truncate_prompt_tokens: TruncatePromptTokens | None = Field(
        None, description="vLLM's name of max_tokens_per_doc (give one of them); -1: the server's length")
    truncation_side: TruncationSide = Field(None, description=TRUNCATION_SIDE_HELP)


class TeiRerankRequest(BaseModel):
    """POST /rerank in Hugging Face text-embeddings-inference's shape (told apart from vLLM's by `texts`)."""

    model_config = ConfigDict(extra="ignore", json_schema_extra=_without("documents"))
    query: Text = Field(..., examples=["What is the population of Berlin?"])
    texts: Annotated[TextStrings, Field(min_length=1)]  # TEI: "`texts` cannot be empty"
    raw_scores: StrictBool = Field(False, description="true: MaxSim; false (default): MaxSim / query vectors (32)")
    return_text: StrictBool = Field(False, description="include each text")
    truncate: StrictBool | None = Field(None, description="true or none: a query over 32 tokens and texts over the "
                                        "server's document length (8192 by default) are truncated; false: refused "
                                        "with 422, as TEI (1.9 on) does")
    truncation_direction: TeiTruncationDirection = Field(
        None, description="where the query and texts over their lengths are cut: Right keeps their first tokens, "
                          "Left their last (<s>, marker and </s> kept); lowercase accepted; none: the server's "
                          "--truncation-side (right by default)")

    @model_validator(mode="before")
    @classmethod
    def _not_vllm(cls, data: Any) -> Any:
        if isinstance(data, dict) and "documents" in data:
            raise PydanticCustomError("shape", "TEI's /rerank takes `texts`, not `documents` (vLLM's shape)")
        return data


class VllmRerankRequest(BaseModel):
    """POST /rerank in vLLM's (Jina/Cohere-like) shape: `documents`, `top_n` 0 = all."""

    model_config = ConfigDict(extra="ignore", json_schema_extra=_without("texts"))
    model: ServedModelName = Field(None, examples=["jinaai/jina-colbert-v2"])
    query: Text | TextInput = Field(..., examples=["What is the population of Berlin?"])
    documents: TextList
    top_n: Annotated[int, Field(ge=0), NO_BOOL_OR_STR] = Field(
        0, description="return only the best top_n; 0 (default): all"
    )
    truncate_prompt_tokens: TruncatePromptTokens | None = Field(
        None, description="truncate each document to this many tokens; -1 or none: the server's length"
    )
    truncation_side: TruncationSide = Field(None, description=TRUNCATION_SIDE_HELP)

    @model_validator(mode="before")
    @classmethod
    def _not_tei(cls, data: Any) -> Any:
        if isinstance(data, dict) and "texts" in data:
            raise PydanticCustomError("shape", "vLLM's /rerank takes `documents`, not `texts` (TEI's shape)")
        return data


# vLLM's /score: one of these pairs of fields, first = queries, second = documents.
SCORE_PAIRS = (("text_1", "text_2"), ("queries", "documents"), ("queries", "items"), ("data_1", "data_2"))
SCORE_FIELDS = ("text_1", "text_2", "queries", "documents", "items", "data_1", "data_2")
# Exactly one pair given (both fields not null): one branch per pair, `oneOf` so that two pairs are refused.
_ONE_SCORE_PAIR = {
    "oneOf": [
        {"required": list(pair), "properties": {name: {"not": {"type": "null"}} for name in pair}}
        for pair in SCORE_PAIRS
    ]
}


class VllmScoreRequest(BaseModel):
    """POST /score and /v1/score (vLLM): 1 query x N documents, or N x N pairs."""

    model_config = ConfigDict(extra="ignore", json_schema_extra=_ONE_SCORE_PAIR)
    model: ServedModelName = Field(None, examples=["jinaai/jina-colbert-v2"])
    text_1: ScoreTexts | None = Field(None, examples=["What is the population of Berlin?"])
    text_2: ScoreTexts | None = Field(None, examples=[["Berlin has 3.8 million inhabitants."]])
    queries: ScoreTexts | None = None
    documents: ScoreTexts | None = None
    items: ScoreTexts | None = None
    data_1: ScoreTexts | None = None
    data_2: ScoreTexts | None = None
    truncate_prompt_tokens: TruncatePromptTokens | None = Field(None, description="as for /rerank")
    truncation_side: TruncationSide = Field(None, description=TRUNCATION_SIDE_HELP)

    def _given(self) -> list[tuple[str, str]]:
        return [p for p in SCORE_PAIRS if getattr(self, p[0]) is not None and getattr(self, p[1]) is not None]

    @model_validator(mode="after")
    def _one_pair(self) -> VllmScoreRequest:
        if len(self._given()) != 1:
            names = " | ".join(f"{a} + {b}" for a, b in SCORE_PAIRS)
            raise PydanticCustomError("score_pair", f"give exactly one pair of fields: {names}")
        return self

    def fields(self) -> tuple[str, str]:
        """The names of the pair given: (queries field, documents field)."""
        ((first, second),) = self._given()
        return first, second


class VllmPoolingRequest(BaseModel):
    """POST /pooling (vLLM) with task token_embed: one vector per token, as /v1/multi-vector."""

    model_config = ConfigDict(extra="ignore")
    model: ServedModelName = Field(None, examples=["jinaai/jina-colbert-v2"])
    input: Text | TextStrings = Field(
        ..., examples=[["Berlin has 3.8 million inhabitants."]], json_schema_extra={"minItems": 1}
    )
    task: Literal["token_embed"] | None = Field(None, description="token_embed (default): per-token vectors")
    embedding_mode: Literal["query", "document"] = Field(
        "document", description="vLLM's ColBERT mode: query (32 vectors) or document (default)"
    )
    encoding_format: Literal["float", "base64"] = Field("float", description="base64: each text's vectors "
                                                        "flattened, as embed_dtype in endianness byte order")
    embed_dtype: Literal["float32", "float16", "bfloat16"] = Field("float32", description="base64's values "
                                                                     "(vLLM's fp8 kinds are not served)")
    endianness: Literal["native", "little", "big"] = Field("native", description="base64's byte order (native: "
                                                           "the server's)")
    dimensions: ServedDimensions = None
    truncate_prompt_tokens: TruncatePromptTokens | None = Field(None, description="documents: as for /rerank")
    truncation_side: TruncationSide = Field(None, description="where a text over its length (a query: 32 tokens) "
                                            "is cut: right keeps its first tokens, left its last (<s>, marker and "
                                            "</s> kept); none: the server's --truncation-side (right by default)")
    add_special_tokens: Literal[True] | None = Field(None, description="the framing tokens are part of the model's "
                                                     "input: false is refused")
    normalize: Literal[True] | None = Field(None, description="vectors are unit length: false is refused")
    use_activation: Literal[True] | None = Field(None, description="as the model outputs them: false is refused")
