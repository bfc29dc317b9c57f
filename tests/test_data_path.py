"""The encoder's data path in two steps: tokenize(texts, kind) -> TokenizedBatch, encode_ids(batch) -> vectors;
and ranking.rank, shared by ColbertEncoder.rerank and the server."""

from __future__ import annotations

import numpy as np
import pytest

from colbert_onnx import ColbertEncoder, InvalidInputError
from colbert_onnx.ranking import rank
from colbert_onnx.tokenization import TokenizedBatch

TEXTS = ["Berlin is the capital of Germany.", "", "   ", "Wie viele Menschen leben in Berlin?",
         " ".join(["Москва — столица России."] * 30)]


def test_query_batches_hold_padded_ids_and_bill_the_framed_tokens(toy_encoder) -> None:
    batch = toy_encoder.tokenize(["Berlin", TEXTS[4]], "query")
    tokenizer = toy_encoder.preprocessor.tokenizer
    body = len(tokenizer.encode("Berlin", add_special_tokens=False).ids)
    assert batch.kind == "query" and batch.lengths.tolist() == [32, 32]
    assert batch.token_counts.tolist() == [body + 3, 32]  # <s> [QueryMarker] body </s>, truncated at 32
    np.testing.assert_array_equal(np.stack(batch.ids), toy_encoder.preprocessor.queries(["Berlin", TEXTS[4]]))


def test_document_batches_bill_the_framed_ids_after_truncation(toy_model_dir) -> None:
    encoder = ColbertEncoder(toy_model_dir, document_max_length=20)
    batch = encoder.tokenize(TEXTS, "document")
    assert batch.token_counts.tolist() == [len(ids) for ids in batch.ids]
    assert batch.token_counts.tolist()[1:3] == [3, 3]  # empty and whitespace-only texts: the specials alone
    assert max(batch.token_counts) == 20


def test_windows_keep_the_untruncated_ids_and_split_them(toy_model_dir) -> None:
    encoder = ColbertEncoder(toy_model_dir, document_max_length=20, long_documents="windows")
    batch = encoder.tokenize([TEXTS[4]], "document")
    assert batch.token_counts[0] > 20 and len(batch.windows[0].sequences) > 1
    assert all(len(s) == 20 for s in batch.windows[0].sequences)


@pytest.mark.parametrize("kind", ["query", "document"])
def test_encode_ids_of_tokenize_is_encode_queries_or_documents(toy_encoder, kind: str) -> None:
    direct = toy_encoder.encode_queries(TEXTS) if kind == "query" else toy_encoder.encode_documents(TEXTS)
    for a, b in zip(toy_encoder.encode_ids(toy_encoder.tokenize(TEXTS, kind)), direct, strict=True):
        np.testing.assert_array_equal(a, b)


def test_merged_batches_encode_as_each_batch_alone(toy_encoder) -> None:
    first, second = toy_encoder.tokenize(TEXTS[:2], "document"), toy_encoder.tokenize(TEXTS[2:], "document")
    merged = TokenizedBatch.concat([first, second])
    assert len(merged) == len(TEXTS) and merged.total_tokens == first.total_tokens + second.total_tokens
    alone = toy_encoder.encode_ids(first) + toy_encoder.encode_ids(second)
    for a, b in zip(toy_encoder.encode_ids(merged), alone, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_batches_of_different_kinds_do_not_merge(toy_encoder) -> None:
    with pytest.raises(InvalidInputError, match="cannot merge"):
        TokenizedBatch.concat([toy_encoder.tokenize("a", "query"), toy_encoder.tokenize("a", "document")])


def test_an_unknown_kind_is_refused(toy_encoder) -> None:
    with pytest.raises(InvalidInputError, match="kind must be one of query, document"):
        toy_encoder.tokenize(["a"], "passage")


def test_encode_ids_refuses_what_the_graph_cannot_take(toy_encoder) -> None:
    with pytest.raises(InvalidInputError, match="must be a TokenizedBatch"):
        toy_encoder.encode_ids(["Berlin"])
    beyond = TokenizedBatch([np.array([0, 5, toy_encoder.folder.vocab_size, 2])])
    with pytest.raises(InvalidInputError, match="outside the graph's vocabulary"):
        toy_encoder.encode_ids(beyond)
    with pytest.raises(InvalidInputError, match="apply to documents only"):
        toy_encoder.encode_ids(toy_encoder.tokenize("q", "query"), output="int8")


def test_rank_is_best_first_and_stable_for_ties() -> None:
    assert rank(np.array([1.0, 3.0, 3.0, 2.0])) == [(1, 3.0), (2, 3.0), (3, 2.0), (0, 1.0)]
    assert rank(np.array([1.0, 3.0, 3.0, 2.0]), top_n=2) == [(1, 3.0), (2, 3.0)]
    assert rank(np.array([1.0]), top_n=5) == [(0, 1.0)]


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "3"])
def test_rank_refuses_a_bad_top_n(bad) -> None:
    with pytest.raises(InvalidInputError, match="top_n must be a positive int or None"):
        rank(np.array([1.0, 2.0]), top_n=bad)


def test_tokenize_max_length_truncates_documents_as_a_shorter_document_max_length(toy_model_dir) -> None:
    """A per-call limit (Cohere's max_tokens_per_doc on the server) gives the ids of an encoder made with it."""
    texts = ["Berlin is the capital and largest city of Germany, with 3.8 million people.", "Cats."]
    got = ColbertEncoder(toy_model_dir).tokenize(texts, "document", max_length=7)
    want = ColbertEncoder(toy_model_dir, document_max_length=7).tokenize(texts, "document")
    assert [ids.tolist() for ids in got.ids] == [ids.tolist() for ids in want.ids]
    assert list(got.token_counts) == list(want.token_counts)
    longer = ColbertEncoder(toy_model_dir, document_max_length=7).tokenize(texts, "document", max_length=100)
    assert len(longer.ids[0]) == 7  # never beyond the encoder's own length
    with pytest.raises(InvalidInputError, match="max_length must be an int >= 3"):
        ColbertEncoder(toy_model_dir).tokenize(texts, "document", max_length=2)
