"""Compact document outputs (float16, int8, binary, ubinary) and MaxSim over them."""

from __future__ import annotations

import numpy as np
import pytest

from colbert_onnx import InvalidInputError, maxsim
from colbert_onnx.compact import bytes_per_token
from colbert_onnx.scoring import maxsim_binary, maxsim_int8
from colbert_onnx.vectors import QuantizedVectors, from_sign_bits, quantize_vectors, to_sign_bits

DOCS = [
    "Berlin is the capital of Germany.",
    "Le chat dort sur le canapé depuis ce matin.",
    "東京は日本の首都です。",
    "def add(a, b): return a + b",
]


def _unit(rng: np.random.Generator, n: int, dim: int = 128) -> np.ndarray:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_ubinary_is_packbits_of_positive_signs_msb_first() -> None:
    v = np.array([[1.0, -1, 0, 2, -3, 4, 5, -6] + [-1.0] * 7 + [0.5]], dtype=np.float32)
    np.testing.assert_array_equal(to_sign_bits(v, "ubinary"), np.array([[0b10010110, 0b00000001]], dtype=np.uint8))


def test_binary_is_ubinary_minus_128_as_int8() -> None:
    v = _unit(np.random.default_rng(0), 5)
    ubinary = to_sign_bits(v, "ubinary")
    binary = to_sign_bits(v, "binary")
    assert binary.dtype == np.int8
    np.testing.assert_array_equal(binary.astype(np.int16), ubinary.astype(np.int16) - 128)


def test_from_sign_bits_inverts_to_sign_bits_for_both_kinds() -> None:
    v = _unit(np.random.default_rng(1), 4)
    signs = np.where(v > 0, 1.0, -1.0)
    np.testing.assert_array_equal(from_sign_bits(to_sign_bits(v, "binary")), signs)
    np.testing.assert_array_equal(from_sign_bits(to_sign_bits(v, "ubinary")), signs)


def test_sign_bits_need_dim_divisible_by_8() -> None:
    with pytest.raises(InvalidInputError, match="divisible by 8"):
        to_sign_bits(np.ones((2, 12), dtype=np.float32))


def test_int8_scale_is_max_abs_over_127() -> None:
    v = _unit(np.random.default_rng(2), 6)
    q = quantize_vectors(v)
    np.testing.assert_allclose(q.scales, np.abs(v).max(axis=1) / 127, rtol=1e-6)
    assert np.abs(q.codes).max(axis=1).tolist() == [127] * 6


def test_int8_dequantization_error_is_at_most_half_a_step() -> None:
    v = _unit(np.random.default_rng(3), 6)
    q = quantize_vectors(v)
    assert np.all(np.abs(q.dequantize() - v) <= q.scales[:, None] / 2 + 1e-7)


def test_int8_of_zero_vector_is_zero() -> None:
    q = quantize_vectors(np.zeros((1, 8), dtype=np.float32))
    assert q.scales.tolist() == [0.0] and not q.codes.any()


def test_exact_maxsim_int8_equals_float_maxsim_of_dequantized_vectors() -> None:
    rng = np.random.default_rng(4)
    docs = [_unit(rng, n) for n in (3, 9, 1)]
    query = _unit(rng, 32)
    quantized = [quantize_vectors(d) for d in docs]
    np.testing.assert_allclose(
        maxsim_int8(query, quantized, exact=True), maxsim(query, [q.dequantize() for q in quantized]), rtol=1e-5
    )


def test_maxsim_int8_is_the_integer_product_of_int8_query_and_codes() -> None:
    """Fast int8 MaxSim: query rounded to int8 per token, integer dot products, both scales after."""
    rng = np.random.default_rng(11)
    docs = [_unit(rng, n) for n in (3, 9, 1, 40)]
    query = _unit(rng, 32)
    quantized = [quantize_vectors(d) for d in docs]
    q = quantize_vectors(query)  # the same per-vector symmetric rule as the documents
    expected = []
    for d in quantized:
        dots = q.codes.astype(np.int64) @ d.codes.astype(np.int64).T  # exact integers
        sims = dots.astype(np.float32) * d.scales[None, :]
        expected.append(float((sims.max(axis=1) * q.scales).sum()))
    np.testing.assert_allclose(maxsim_int8(query, quantized, exact=False), expected, rtol=1e-6, atol=1e-6)


def test_maxsim_int8_stays_close_to_exact_scores_and_ranking() -> None:
    """The int8 query adds ~1e-3 per query token to the document quantization error; ranking barely moves."""
    rng = np.random.default_rng(12)
    docs = [_unit(rng, int(n)) for n in rng.integers(20, 120, size=200)]
    query = _unit(rng, 32)
    quantized = [quantize_vectors(d) for d in docs]
    exact = maxsim(query, docs)
    fast = maxsim_int8(query, quantized, exact=False)
    dequantized = maxsim(query, quantized)  # the default: float query, dequantized documents
    assert np.abs(fast - exact).max() < 2e-3 * query.shape[0]
    assert np.abs(fast - dequantized).max() < 2e-3 * query.shape[0]
    top = set(np.argsort(-exact)[:10])
    assert len(top & set(np.argsort(-fast)[:10])) >= 8


def test_maxsim_int8_scores_batched_queries_like_single_ones() -> None:
    rng = np.random.default_rng(13)
    quantized = [quantize_vectors(_unit(rng, n)) for n in (5, 17, 2)]
    queries = np.stack([_unit(rng, 32) for _ in range(3)])
    for exact in (True, False):
        scores = maxsim_int8(queries, quantized, exact=exact)
        assert scores.shape == (3, 3)
        for i in range(3):
            np.testing.assert_allclose(scores[i], maxsim_int8(queries[i], quantized, exact=exact), rtol=1e-6)


def test_maxsim_int8_rejects_dimension_mismatch_and_empty_documents() -> None:
    rng = np.random.default_rng(14)
    with pytest.raises(InvalidInputError, match="dim"):
        maxsim(_unit(rng, 32, dim=64), [quantize_vectors(_unit(rng, 3))])
    with pytest.raises(InvalidInputError, match="no vectors"):
        maxsim_int8(_unit(rng, 32), [quantize_vectors(_unit(rng, 3)), quantize_vectors(np.zeros((0, 128), np.float32))])


def test_maxsim_binary_is_sum_of_best_one_minus_twice_hamming_over_dim() -> None:
    rng = np.random.default_rng(5)
    docs = [_unit(rng, n) for n in (4, 7)]
    query = _unit(rng, 32)
    qbits = np.unpackbits(to_sign_bits(query), axis=1)
    expected = []
    for d in docs:
        dbits = np.unpackbits(to_sign_bits(d), axis=1)
        hamming = (qbits[:, None, :] != dbits[None, :, :]).sum(axis=2)
        expected.append((1 - 2 * hamming / 128).max(axis=1).sum())
    np.testing.assert_allclose(maxsim(query, [to_sign_bits(d, "binary") for d in docs]), expected, rtol=1e-6)


def test_maxsim_gives_same_scores_for_binary_and_ubinary() -> None:
    rng = np.random.default_rng(6)
    docs = [_unit(rng, n) for n in (5, 2)]
    query = _unit(rng, 32)
    np.testing.assert_array_equal(
        maxsim(query, [to_sign_bits(d, "binary") for d in docs]),
        maxsim(query, [to_sign_bits(d, "ubinary") for d in docs]),
    )


def test_asymmetric_binary_scores_float_query_against_scaled_signs() -> None:
    rng = np.random.default_rng(7)
    doc = _unit(rng, 5)
    query = _unit(rng, 32)
    signs = np.where(doc > 0, 1.0, -1.0) / np.sqrt(128)
    expected = (query @ signs.T).max(axis=1).sum()
    got = maxsim_binary(query, [to_sign_bits(doc)], binarize_query=False)
    np.testing.assert_allclose(got, [expected], rtol=1e-5)


def test_maxsim_rejects_documents_of_mixed_kinds() -> None:
    rng = np.random.default_rng(8)
    doc = _unit(rng, 3)
    with pytest.raises(InvalidInputError, match="mix"):
        maxsim(_unit(rng, 32), [doc, to_sign_bits(doc)])


def test_quantized_vectors_rejects_mismatched_scales() -> None:
    with pytest.raises(InvalidInputError, match="scales"):
        QuantizedVectors(codes=np.zeros((3, 8), dtype=np.int8), scales=np.ones(2, dtype=np.float32))


def test_bytes_per_token_of_each_kind() -> None:
    v = _unit(np.random.default_rng(9), 10)
    assert bytes_per_token([v]) == 512
    assert bytes_per_token([v.astype(np.float16)]) == 256
    assert bytes_per_token([quantize_vectors(v)]) == 132
    assert bytes_per_token([to_sign_bits(v)]) == 16


def test_encode_documents_rejects_unknown_output_kind(toy_encoder) -> None:
    with pytest.raises(InvalidInputError, match="output must be one of"):
        toy_encoder.encode_documents(DOCS[:1], output="int4")


def test_encode_documents_float16_is_float32_rounded(toy_encoder) -> None:
    full = toy_encoder.encode_documents(DOCS)
    half = toy_encoder.encode_documents(DOCS, output="float16")
    for f, h in zip(full, half, strict=True):
        assert h.dtype == np.float16
        np.testing.assert_array_equal(h, f.astype(np.float16))


def test_encode_documents_int8_returns_quantized_vectors_per_document(toy_encoder) -> None:
    full = toy_encoder.encode_documents(DOCS)
    quantized = toy_encoder.encode_documents(DOCS, output="int8")
    for f, q in zip(full, quantized, strict=True):
        assert isinstance(q, QuantizedVectors) and q.shape == f.shape
        np.testing.assert_allclose(q.dequantize(), f, atol=float(q.scales.max()) / 2 + 1e-7)


@pytest.mark.parametrize("kind, dtype", [("binary", np.int8), ("ubinary", np.uint8)])
def test_encode_documents_binary_kinds_pack_dim_over_8_bytes(toy_encoder, kind: str, dtype: type) -> None:
    full = toy_encoder.encode_documents(DOCS)
    packed = toy_encoder.encode_documents(DOCS, output=kind)
    for f, p in zip(full, packed, strict=True):
        assert p.dtype == dtype and p.shape == (f.shape[0], toy_encoder.dim // 8)
        np.testing.assert_array_equal(p, to_sign_bits(f, kind))


def test_int8_scores_stay_within_a_hundredth_per_query_token_of_float32(toy_encoder) -> None:
    (query,) = toy_encoder.encode_queries(["capital of Germany"])
    exact = maxsim(query, toy_encoder.encode_documents(DOCS))
    approx = maxsim(query, toy_encoder.encode_documents(DOCS, output="int8"))
    assert np.abs(approx - exact).max() < 0.01 * query.shape[0]


@pytest.mark.parametrize("kind", ["binary", "ubinary"])
def test_sign_bits_match_the_http_servers_embedding_type(kind: str) -> None:
    formats = pytest.importorskip("colbert_onnx.server.formats", reason="the HTTP server package is not installed")
    v = _unit(np.random.default_rng(10), 7)
    np.testing.assert_array_equal(to_sign_bits(v, kind), formats.encode_vectors(v, kind))


def test_quantized_vectors_refuses_codes_that_are_not_an_array() -> None:
    with pytest.raises(InvalidInputError, match="codes must be a .* int8 array, got list"):
        QuantizedVectors([[1]], np.ones(1, dtype=np.float32))


def test_quantized_vectors_refuses_scales_that_are_not_an_array() -> None:
    with pytest.raises(InvalidInputError, match="scales must be a .* array, got list"):
        QuantizedVectors(np.ones((1, 8), dtype=np.int8), [1.0])


@pytest.mark.parametrize("dtype", [np.int8, np.uint8])
def test_maxsim_refuses_int8_arrays_whose_sign_bits_do_not_match_the_query_dim(dtype) -> None:
    """int8/uint8 arrays are binary/ubinary sign bits: a (tokens, 128) one holds 1024 bits, not a 128-dim vector."""
    codes = quantize_vectors(_unit(np.random.default_rng(15), 3)).codes.astype(dtype)
    with pytest.raises(InvalidInputError, match="sign bits .* dim 1024, not the query's 128.* QuantizedVectors"):
        maxsim(_unit(np.random.default_rng(16), 32), [codes])
