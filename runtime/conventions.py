"""ColBERT pre-processing conventions of jina-colbert-v2, as fastembed, PyLate and Jina's API serve it."""

from __future__ import annotations

import string
from dataclasses import dataclass

from tokenizers import Tokenizer

QUERY_MARKER = "[QueryMarker]"
DOCUMENT_MARKER = "[DocumentMarker]"
MASK_TOKEN = "<mask>"
BOS_TOKEN = "<s>"
EOS_TOKEN = "</s>"
PAD_TOKEN = "<pad>"

QUERY_MAX_LENGTH = 32
DOCUMENT_MAX_LENGTH = 8192


def punctuation_skiplist(tokenizer: Tokenizer) -> list[int]:
    """Stanford ColBERT / fastembed rule: the first id of each ASCII punctuation character, encoded alone.

    PyLate uses ``convert_tokens_to_ids`` instead, which differs for SentencePiece vocabularies
    (see docs/conventions.md); we follow Stanford/fastembed.
    """
    ids = set()
    for p in string.punctuation:
        encoded = tokenizer.encode(p, add_special_tokens=False).ids
        if encoded:
            ids.add(encoded[0])
    return sorted(ids)


@dataclass(frozen=True)
class SpecialIds:
    """Ids of the tokens that frame queries and documents, looked up by string in the tokenizer."""

    bos: int
    eos: int
    pad: int
    mask: int
    query_marker: int
    document_marker: int

    @classmethod
    def from_tokenizer(cls, tokenizer: Tokenizer) -> SpecialIds:
        found = {}
        for field, token in (
            ("bos", BOS_TOKEN),
            ("eos", EOS_TOKEN),
            ("pad", PAD_TOKEN),
            ("mask", MASK_TOKEN),
            ("query_marker", QUERY_MARKER),
            ("document_marker", DOCUMENT_MARKER),
        ):
            token_id = tokenizer.token_to_id(token)
            if token_id is None:
                raise KeyError(token)
            found[field] = token_id
        return cls(**found)
