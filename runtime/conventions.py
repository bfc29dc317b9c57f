"""ColBERT pre-processing conventions of jina-colbert-v2, as fastembed, PyLate and Jina's API serve it.

The strings and lengths here are the exporter's defaults, written into a folder's manifest when the
checkpoint does not name its own (the markers come from its ``artifact.metadata``). The runtime reads
them from the manifest (manifest.py), never from here.
"""

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
    def from_tokenizer(
        cls,
        tokenizer: Tokenizer,
        query_marker: str = QUERY_MARKER,
        document_marker: str = DOCUMENT_MARKER,
        mask: str = MASK_TOKEN,
    ) -> SpecialIds:
        """Each token's id by string; KeyError naming the first token the tokenizer lacks."""
        found = {}
        for field, token in (
            ("bos", BOS_TOKEN),
            ("eos", EOS_TOKEN),
            ("pad", PAD_TOKEN),
            ("mask", mask),
            ("query_marker", query_marker),
            ("document_marker", document_marker),
        ):
            token_id = tokenizer.token_to_id(token)
            if token_id is None:
                raise KeyError(token)
            found[field] = token_id
        return cls(**found)
