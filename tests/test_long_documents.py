"""long_documents="windows": every token of a long document is represented; short ones are unchanged."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from colbert_onnx import ColbertEncoder, InvalidInputError
from colbert_onnx.windows import split_windows

LONG = " ".join(["Berlin ist die Hauptstadt Deutschlands und hat viele Museen."] * 30)


def test_windowed_equals_plain_when_document_fits(toy_model_dir):
    plain = ColbertEncoder(toy_model_dir).encode_documents(["Berlin ist groß.", LONG])
    windowed = ColbertEncoder(toy_model_dir, long_documents="windows").encode_documents(["Berlin ist groß.", LONG])
    for a, b in zip(plain, windowed, strict=True):
        np.testing.assert_array_equal(a, b)


def test_windows_keep_one_vector_per_original_token(toy_model_dir):
    encoder = ColbertEncoder(toy_model_dir, document_max_length=64, long_documents="windows", window_stride=20)
    (vectors,) = encoder.encode_documents([LONG])
    framed = encoder.preprocessor.documents([LONG], max_length=10**9).ids[0]
    kept = int((~np.isin(framed, encoder._skiplist)).sum())
    assert len(framed) > 64
    assert vectors.shape == (kept, 128)
    truncated = ColbertEncoder(toy_model_dir, document_max_length=64).encode_documents([LONG])[0]
    assert truncated.shape[0] < vectors.shape[0]


def test_first_window_tokens_equal_truncated_encoding(toy_model_dir):
    windowed = ColbertEncoder(toy_model_dir, document_max_length=64, long_documents="windows", window_stride=30)
    truncated = ColbertEncoder(toy_model_dir, document_max_length=64)
    (w,) = windowed.encode_documents([LONG])
    (t,) = truncated.encode_documents([LONG])
    # The first 15 body tokens are most central in window 0, which is exactly the truncated sequence.
    np.testing.assert_allclose(w[:10], t[:10], atol=1e-5)


def test_split_windows_takes_each_token_from_its_most_central_window():
    ids = np.array([0, 9] + list(range(100, 130)) + [2])
    doc = split_windows(ids, max_length=13, stride=5)
    assert all(len(s) == 13 for s in doc.sequences)
    assert [int(s[2]) for s in doc.sequences] == [100, 105, 110, 115, 120]
    # body position 12 sits in windows starting at 5 (offset 7) and 10 (offset 2): window 1 is more central.
    assert doc.window_of_token[12] == 1 and doc.offset_in_window[12] == 7
    assert doc.window_of_token[0] == 0 and doc.window_of_token[29] == 4


def _most_central_by_definition(starts: list[int], window: int, length: int) -> np.ndarray:
    """Each body position's window by the definition: the largest distance to the nearer edge, first on ties."""
    positions = np.arange(length)
    begin = np.array(starts)[:, None]
    inside = (positions >= begin) & (positions < begin + window)
    return np.where(inside, np.minimum(positions - begin, begin + window - 1 - positions), -1).argmax(axis=0)


@settings(max_examples=300, deadline=None)
@given(body=st.integers(1, 400), max_length=st.integers(4, 64), stride=st.integers(1, 61))
def test_every_token_comes_from_its_most_central_window_whatever_the_lengths_and_stride(body, max_length, stride):
    window = max_length - 3
    stride = min(stride, window)  # a longer stride is refused by EncoderConfig
    ids = np.concatenate([[0, 9], np.arange(100, 100 + body), [2]])
    doc = split_windows(ids, max_length, stride)
    if body + 3 <= max_length:
        assert len(doc.sequences) == 1 and doc.window_of_token is None
        return
    starts = [int(s[2]) - 100 for s in doc.sequences]
    np.testing.assert_array_equal(doc.window_of_token, _most_central_by_definition(starts, window, body))
    taken = np.stack(doc.sequences)[doc.window_of_token, 2 + doc.offset_in_window]
    np.testing.assert_array_equal(taken, ids[2:-1])
    outputs = [np.stack([np.full(len(s), w), np.arange(len(s))], axis=1) for w, s in enumerate(doc.sequences)]
    stacked = np.stack(outputs)[doc.window_of_token, 2 + doc.offset_in_window]
    np.testing.assert_array_equal(doc.merge(outputs), np.concatenate([outputs[0][:2], stacked, outputs[-1][-1:]]))


def test_windows_of_a_megabyte_document_are_planned_in_linear_memory():
    """507 003 tokens in 248 windows: the table of every window's distance to every token took 11 s and 3.1 GB."""
    import tracemalloc

    ids = np.concatenate([[0, 9], np.arange(507_000) % 500 + 5, [2]])
    tracemalloc.start()
    doc = split_windows(ids, max_length=2048, stride=2045)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(doc.sequences) == 248
    assert peak < 16 * ids.nbytes, peak  # a few arrays of the body's length (7x here), not windows x tokens (760x)


def test_unknown_long_documents_mode_is_rejected(toy_model_dir):
    with pytest.raises(InvalidInputError, match="long_documents"):
        ColbertEncoder(toy_model_dir, long_documents="chunks")



def test_one_megabyte_document_is_truncated_or_windowed_without_crash(toy_model_dir):
    text = ("Berlin ist die Hauptstadt Deutschlands, und sie hat 3,8 Millionen Einwohner. " * 13000)[: 1 << 20]
    assert len(text.encode("utf-8")) >= 1_000_000
    (truncated,) = ColbertEncoder(toy_model_dir).encode_documents([text])
    assert 0 < truncated.shape[0] <= 8192
    windowed = ColbertEncoder(toy_model_dir, document_max_length=2048, long_documents="windows", window_stride=2045)
    (all_tokens,) = windowed.encode_documents([text])
    assert all_tokens.shape[0] > 20 * truncated.shape[0] / 4
    assert np.isfinite(all_tokens).all()


def test_document_max_length_beyond_trained_positions_points_to_windows(toy_model_dir):
    with pytest.raises(InvalidInputError, match="long_documents='windows'"):
        ColbertEncoder(toy_model_dir, document_max_length=20000)


@pytest.mark.parametrize("max_length", [64, 100, 257])
def test_a_per_call_limit_above_the_window_size_truncates_windowed_documents_there(toy_model_dir, max_length):
    """Cohere's max_tokens_per_doc / vLLM's truncate_prompt_tokens reach windows mode as max_length: the document
    is cut at max_length tokens in all and that part is windowed, never run whole."""
    encoder = ColbertEncoder(toy_model_dir, document_max_length=64, long_documents="windows", window_stride=20)
    batch = encoder.tokenize([LONG], "document", max_length=max_length)
    whole = encoder.preprocessor.documents([LONG], max_length=10**9).ids[0]
    assert len(whole) > 300
    np.testing.assert_array_equal(batch.ids[0], np.concatenate([whole[: max_length - 1], whole[-1:]]))
    assert int(batch.token_counts[0]) == max_length
    assert all(len(seq) <= 64 for seq in batch.windows[0].sequences)


def test_max_length_for_queries_is_refused_naming_the_query_length(toy_model_dir):
    encoder = ColbertEncoder(toy_model_dir)
    with pytest.raises(InvalidInputError, match="max_length applies to documents.*32"):
        encoder.tokenize(["what is Berlin"], "query", max_length=5)


# Start and end differ: a cut on the left keeps other tokens than one on the right.
NUMBERED = " ".join(f"Berlin {i} hat {3 * i} Museen." for i in range(120))


def test_left_truncation_cuts_nothing_where_windows_cover_the_whole_document(toy_model_dir):
    """Windows encode every token of a document: there is no cut for a side to decide, so left gives right's ids,
    windows and vectors (accepted rather than refused: a server whose requests ask for left keeps serving)."""
    encoder = ColbertEncoder(toy_model_dir, document_max_length=64, long_documents="windows", window_stride=20)
    left, right = (encoder.tokenize([NUMBERED], "document", truncation_side=side) for side in ("left", "right"))
    assert len(right.ids[0]) > 300
    np.testing.assert_array_equal(left.ids[0], right.ids[0])
    for a, b in zip(left.windows[0].sequences, right.windows[0].sequences, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("max_length", [40, 100, 257])
def test_a_per_call_limit_in_windows_mode_keeps_the_last_tokens_when_cut_on_the_left(toy_model_dir, max_length):
    """Below the window size one sequence of the last tokens; above it, the last `max_length` tokens windowed."""
    encoder = ColbertEncoder(toy_model_dir, document_max_length=64, long_documents="windows", window_stride=20)
    batch = encoder.tokenize([NUMBERED], "document", max_length=max_length, truncation_side="left")
    whole = encoder.preprocessor.documents([NUMBERED], max_length=10**9).ids[0]
    np.testing.assert_array_equal(batch.ids[0], np.concatenate([whole[:2], whole[-(max_length - 2):]]))
    assert not np.array_equal(batch.ids[0], encoder.tokenize([NUMBERED], "document", max_length=max_length).ids[0])
    assert all(len(seq) <= 64 for seq in batch.windows[0].sequences)
