"""Text -> framed token ids: the only place where queries and documents are built from text."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from tokenizers import Tokenizer

from .conventions import SpecialIds
from .errors import InvalidInputError
from .text import check_texts, normalize_text
from .windows import DocumentWindows

if TYPE_CHECKING:
    from .manifest import Manifest


def as_text_list(texts: str | Sequence[str], what: str = "texts") -> list[str]:
    """Accept one str or a sequence of str; anything else, or a text the tokenizer cannot take (text.py), is a
    typed error naming the bad item."""
    if texts is None:
        raise InvalidInputError(f"{what} is None; pass a str or a list of str")
    if isinstance(texts, str):
        return [texts]
    if isinstance(texts, (bytes, bytearray)):
        raise InvalidInputError(f"{what} is bytes; decode it to str first")
    kind = type(texts).__name__
    if isinstance(texts, Mapping):  # iterating one gives its keys: ids, not texts
        raise InvalidInputError(f"{what} is a {kind}, whose items are its keys; pass the texts as a list "
                                "(e.g. list(d.values()))")
    if isinstance(texts, AbstractSet):
        raise InvalidInputError(f"{what} is a {kind}, which has no order to keep; pass a list")
    ndim = getattr(texts, "ndim", 1)
    if ndim != 1:  # a DataFrame iterates over its column names, a 2-D array over rows
        raise InvalidInputError(f"{what} is a {ndim}-D {kind}; pass one column of texts (e.g. df['text']) "
                                "or a list of str")
    try:
        items = list(texts)
    except TypeError:
        raise InvalidInputError(
            f"{what} must be a str or a list of str, got {type(texts).__name__}"
        ) from None
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise InvalidInputError(f"{what}[{i}] is {type(item).__name__}, expected str")
    check_texts(items, what)
    return items


def pad_batch(seqs: Sequence[np.ndarray], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad id sequences into (batch, longest) `input_ids` and the matching `attention_mask`."""
    lengths = [len(s) for s in seqs]
    ids = np.full((len(seqs), max(lengths)), pad_id, dtype=np.int64)
    mask = np.zeros_like(ids)
    for row, (seq, n) in enumerate(zip(seqs, lengths, strict=True)):
        ids[row, :n] = seq
        mask[row, :n] = 1
    return ids, mask


TEXT_KINDS = ("query", "document")
# Where a text longer than its limit is cut: right keeps its first tokens (Jina's API, the default), left its last
# (TEI's truncation_direction "Left", vLLM's truncation_side "left"). `<s>`, the marker and `</s>` stay either way.
TRUNCATION_SIDES = ("right", "left")


def check_truncation_side(side: object, what: str = "truncation_side") -> str:
    """`side` if it is one of TRUNCATION_SIDES, else InvalidInputError naming `what` and the allowed values."""
    if not isinstance(side, str) or side not in TRUNCATION_SIDES:
        raise InvalidInputError(f"{what} must be one of {', '.join(TRUNCATION_SIDES)}, got {side!r}")
    return side


def truncated(ids: list[int], keep: int, side: str) -> list[int]:
    """The first (right) or last (left) `keep` of `ids`; all of them when there are no more."""
    return ids[:keep] if side == "right" else ids[max(0, len(ids) - keep):]


@dataclass(frozen=True)
class TokenizedBatch:
    """Framed ids of a list of texts of one kind: what the model runs on, and what the texts are billed.

    `ids[i]` are the ids the model sees for text i (queries: ``<mask>``-padded to the query length);
    `token_counts[i]` its framed tokens after truncation (queries: before the ``<mask>`` padding), the
    figure of the server's ``usage`` and token limit. `windows[i]` (documents) says which sequences
    encode text i and how their vectors merge back (windows.py); None: one sequence per text, its ids.
    """

    ids: list[np.ndarray]
    kind: str = "document"
    token_counts: np.ndarray | None = None
    windows: list[DocumentWindows] | None = None

    def __post_init__(self) -> None:
        if self.kind not in TEXT_KINDS:
            raise InvalidInputError(f"kind must be one of {', '.join(TEXT_KINDS)}, got {self.kind!r}")
        if self.token_counts is None:
            object.__setattr__(self, "token_counts", self.lengths)
        if len(self.token_counts) != len(self.ids) or (self.windows is not None and len(self.windows) != len(self.ids)):
            raise InvalidInputError("a TokenizedBatch needs one token count (and one windows entry) per text")

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(x) for x in self.ids), dtype=np.int64, count=len(self.ids))

    @property
    def total_tokens(self) -> int:
        return int(self.token_counts.sum())

    @property
    def document_windows(self) -> list[DocumentWindows]:
        """The windows of every text: as tokenized, or one window of its ids."""
        return self.windows if self.windows is not None else [DocumentWindows([ids]) for ids in self.ids]

    @classmethod
    def concat(cls, batches: Sequence[TokenizedBatch]) -> TokenizedBatch:
        """One batch of the texts of `batches`, in order (all of one kind): what a micro-batch runs."""
        kinds = {b.kind for b in batches}
        if len(kinds) != 1:
            raise InvalidInputError(f"cannot merge batches of kinds {sorted(kinds)}")
        (kind,) = kinds
        return cls(
            ids=[ids for b in batches for ids in b.ids],
            kind=kind,
            token_counts=np.concatenate([b.token_counts for b in batches]),
            windows=[w for b in batches for w in b.document_windows] if kind == "document" else None,
        )


class Preprocessor:
    """Builds `<s> [marker] text </s>` sequences exactly as fastembed/PyLate do for jina-colbert-v2.

    The tokenizer is never mutated after construction (no enable_truncation/padding per call), which
    is what makes it safe to share between threads (fastembed's "Already borrowed" bug).
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        special: SpecialIds,
        query_max_length: int,
        document_max_length: int,
        attend_to_mask_tokens: bool = True,
    ) -> None:
        if query_max_length < 4:
            raise InvalidInputError(f"query_max_length must be >= 4, got {query_max_length}")
        if document_max_length < 4:
            raise InvalidInputError(f"document_max_length must be >= 4, got {document_max_length}")
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self.tokenizer = tokenizer
        self.special = special
        self.query_max_length = query_max_length
        self.document_max_length = document_max_length
        self.attend_to_mask_tokens = attend_to_mask_tokens

    def _framed(self, texts: list[str], marker: int, max_length: int, side: str = "right") -> list[np.ndarray]:
        """`<s> marker body </s>` per text, the body cut to `max_length` - 3 tokens on `side` (right: its first
        tokens kept; left: its last)."""
        check_truncation_side(side)
        body_max = max_length - 3
        check_texts(texts)  # callers that skip as_text_list get the same refusals, never the tokenizer's TypeError
        texts = [normalize_text(t) for t in texts]
        # Whitespace-only text is empty text: it encodes to the special tokens alone.
        encodings = self.tokenizer.encode_batch([t if t.strip() else "" for t in texts], add_special_tokens=False)
        head = [self.special.bos, marker]
        tail = [self.special.eos]
        return [np.array(head + truncated(enc.ids, body_max, side) + tail, dtype=np.int64) for enc in encodings]

    def queries(self, texts: list[str], truncation_side: str = "right") -> np.ndarray:
        """(batch, query_max_length) ids, right-padded with `<mask>` (the query augmentation); a longer query is
        cut on `truncation_side` first."""
        return self._padded_queries(self._framed(texts, self.special.query_marker, self.query_max_length,
                                                 truncation_side))

    def query_batch(self, texts: list[str], truncation_side: str = "right") -> TokenizedBatch:
        """The queries' padded ids (one row each), billed their framed tokens before the padding."""
        framed = self._framed(texts, self.special.query_marker, self.query_max_length, truncation_side)
        counts = np.fromiter((len(ids) for ids in framed), dtype=np.int64, count=len(framed))
        return TokenizedBatch(list(self._padded_queries(framed)), kind="query", token_counts=counts)

    @classmethod
    def for_manifest(cls, tokenizer: Tokenizer, special: SpecialIds, manifest: Manifest,
                     document_max_length: int) -> Preprocessor:
        """The preprocessor of a folder with `manifest`: its query length and whether queries attend to their
        `<mask>` padding (the one place that reads its query convention), documents cut at `document_max_length`."""
        return cls(tokenizer, special, manifest.query.max_length, document_max_length,
                   manifest.query.attend_to_mask_tokens)

    def query_mask(self, token_counts: np.ndarray) -> np.ndarray:
        """The attention mask of `<mask>`-padded queries of `token_counts` framed tokens each: all ones where the model
        attends to its `<mask>` padding (jina-colbert-v2), else ones on each query's own tokens only, as ColBERT's
        QueryTokenizer leaves it with attend_to_mask_tokens false (manifest query.attend_to_mask_tokens); every
        position still gets its vector."""
        counts = np.asarray(token_counts, dtype=np.int64)
        if self.attend_to_mask_tokens:
            return np.ones((len(counts), self.query_max_length), dtype=np.int64)
        return (np.arange(self.query_max_length)[None, :] < counts[:, None]).astype(np.int64)

    def query_feeds(self, texts: list[str], truncation_side: str = "right") -> tuple[np.ndarray, np.ndarray]:
        """(ids, attention mask) of the queries, as the runtime runs them."""
        batch = self.query_batch(texts, truncation_side)
        return np.stack(batch.ids), self.query_mask(batch.token_counts)

    def _padded_queries(self, framed: list[np.ndarray]) -> np.ndarray:
        out = np.full((len(framed), self.query_max_length), self.special.mask, dtype=np.int64)
        for row, ids in zip(out, framed, strict=True):
            row[: len(ids)] = ids
        return out

    def documents(self, texts: list[str], max_length: int | None = None,
                  truncation_side: str = "right") -> TokenizedBatch:
        """Framed document ids truncated to `max_length` tokens in all (specials included), on `truncation_side`."""
        limit = self.document_max_length if max_length is None else max_length
        return TokenizedBatch(self._framed(texts, self.special.document_marker, limit, truncation_side))
