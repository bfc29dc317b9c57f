"""long_documents="windows": every token of a long document is represented; short ones are unchanged."""

from __future__ import annotations

import numpy as np
import pytest

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
