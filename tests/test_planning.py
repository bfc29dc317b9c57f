"""Batch planning (runtime/planning.py): little padding on a realistic length mix, cheapest plan, same vectors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from benchmarks.length_mix import DEFAULTS, document_lengths, documents, padded_fraction, run_planned
from colbert_onnx import ColbertEncoder, InvalidInputError
from colbert_onnx import encoder as encoder_module
from colbert_onnx.planning import LONG_TOKENS, RUN_OVERHEAD_TOKENS, plan_batches, plan_padded_batches

# Padded share of the tokens sent, planned with the encoder's defaults (32 rows, 16384 tokens) on the seeded
# mix; docs/benchmarks.md reports these figures, next to the old planner's 0.43 / 0.22 / 0.073.
REPORTED_PADDING = {64: 0.008, 256: 0.006, 1000: 0.003}


def _cost(lengths: np.ndarray, batches: list[np.ndarray]) -> int:
    return sum(len(b) * int(lengths[b].max()) + RUN_OVERHEAD_TOKENS for b in batches)


@pytest.mark.parametrize("count", REPORTED_PADDING)
def test_padding_on_the_length_mix_stays_below_the_reported_figure(count):
    lengths, limits = document_lengths(count), (DEFAULTS.batch_size, DEFAULTS.max_batch_tokens)
    assert padded_fraction(lengths, plan_batches(lengths, *limits)) < REPORTED_PADDING[count]
    assert padded_fraction(lengths, plan_padded_batches(lengths, *limits)) > 0.07, "the old planner, for contrast"


def test_benchmark_runs_the_mix_on_the_batches_the_encoder_would_plan():
    docs, shapes = documents(256), []
    padded = run_planned(lambda ids, mask: shapes.append((ids.shape, int(mask.sum()))), plan_batches, docs)
    lengths = np.array([len(d) for d in docs])
    planned = plan_batches(lengths, DEFAULTS.batch_size, DEFAULTS.max_batch_tokens)
    assert [s for s, _ in shapes] == [(len(b), int(lengths[b].max())) for b in planned]
    assert sum(real for _, real in shapes) == lengths.sum()
    assert padded == padded_fraction(lengths, planned) < REPORTED_PADDING[256]


def test_length_mix_is_log_normal_between_20_and_2048_around_150():
    lengths = document_lengths(20000)
    assert lengths.min() == 20 and lengths.max() == 2048
    assert 140 <= np.median(lengths) <= 160
    assert document_lengths(50, seed=3).tolist() == document_lengths(50, seed=3).tolist()
    assert [len(d) for d in documents(5)] == document_lengths(5).tolist()


def test_every_sequence_is_planned_once_longest_batches_first():
    lengths = document_lengths(300, seed=1)
    batches = plan_batches(lengths, 32, 16384)
    assert sorted(int(i) for b in batches for i in b) == list(range(300))
    longest = [int(lengths[b].max()) for b in batches]
    assert longest == sorted(longest, reverse=True)


@pytest.mark.parametrize("batch_size,max_batch_tokens", [(32, 16384), (4, 2500), (64, None)])
def test_batches_keep_the_batch_size_and_token_budget(batch_size, max_batch_tokens):
    lengths = document_lengths(500, seed=2)
    for b in plan_batches(lengths, batch_size, max_batch_tokens):
        assert len(b) <= batch_size
        assert max_batch_tokens is None or len(b) * lengths[b].max() <= max_batch_tokens


def test_long_sequences_share_a_batch_only_with_sequences_of_their_length():
    lengths = np.array([300, 300, 299, 1000, 1000, 1000, 256, 255, 40, 41, 300])
    for b in plan_batches(lengths, 32, None):
        if lengths[b].max() >= LONG_TOKENS:
            assert len(set(lengths[b].tolist())) == 1, lengths[b]
    assert sorted(len(b) for b in plan_batches(lengths, 32, None) if lengths[b].max() == 300) == [3]


def test_short_sequences_are_merged_when_padding_costs_less_than_a_run():
    lengths = np.array([50, 49, 48, 20])
    (batch,) = [b for b in plan_batches(lengths, 32, None) if 0 in b]
    assert sorted(batch.tolist()) == [0, 1, 2], "1-2 padded tokens each beat a run's overhead; 20 would pad 30"


def _feasible_splits(sorted_lengths: np.ndarray, batch_size: int, budget: int):
    """Every split of the sorted lengths into consecutive batches that the planner's rules allow."""
    n = len(sorted_lengths)
    for cuts in itertools.product([False, True], repeat=n - 1):
        ends = [i + 1 for i, cut in enumerate(cuts) if cut] + [n]
        pieces = [np.arange(s, e) for s, e in zip([0, *ends[:-1]], ends, strict=True)]
        if all(len(p) <= batch_size and len(p) * sorted_lengths[p].max() <= budget
               and (sorted_lengths[p].max() < LONG_TOKENS or len(set(sorted_lengths[p].tolist())) == 1)
               for p in pieces):
            yield pieces


@pytest.mark.parametrize("seed", range(6))
def test_the_plan_is_the_cheapest_split_of_the_sorted_lengths(seed):
    lengths = np.random.default_rng(seed).choice([12, 13, 30, 31, 60, 250, 256, 257, 400], size=9)
    sorted_lengths = lengths[np.argsort(-lengths, kind="stable")]
    best = min(_cost(sorted_lengths, pieces) for pieces in _feasible_splits(sorted_lengths, 4, 1200))
    assert _cost(lengths, plan_batches(lengths, 4, 1200)) == best


def test_a_token_budget_below_one_sequence_is_a_clear_error():
    with pytest.raises(InvalidInputError, match="smaller than one sequence of 50 tokens"):
        plan_batches(np.array([50, 3]), batch_size=4, max_batch_tokens=10)


def test_nothing_to_plan_gives_no_batches():
    assert plan_batches(np.zeros(0, np.int64), 32, 16384) == []


def test_encoder_returns_the_length_mix_in_input_order_with_the_old_planners_vectors(toy_model_dir, monkeypatch):
    encoder = ColbertEncoder(toy_model_dir)
    docs = [d[: min(len(d), 300)] for d in documents(40, seed=4, marker=encoder.preprocessor.special.document_marker)]
    planned = encoder._encode_sequences(docs)
    monkeypatch.setattr(encoder_module, "plan_batches", plan_padded_batches)
    padded = encoder._encode_sequences(docs)
    for doc, new, old in zip(docs, planned, padded, strict=True):
        assert new.shape == (len(doc), 128)
        np.testing.assert_allclose(new, old, atol=1e-5)
    for i in (0, 17, 39):  # input order: each result is that document's own vectors
        np.testing.assert_allclose(planned[i], encoder._encode_sequences([docs[i]])[0], atol=1e-5)


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_a_documents_vectors_do_not_depend_on_its_batch_mates(toy_model_dir, precision):
    """Long documents batch only with their own length (unmasked kernel), short ones only with short ones
    (masked kernel): the same document gets bit-identical vectors alone and in any call."""
    encoder = ColbertEncoder(toy_model_dir, precision=precision)
    marker = encoder.preprocessor.special.document_marker
    mix = [d[:600] for d in documents(24, seed=5, marker=marker)]
    longest = max(mix, key=len)
    # lengths a token apart: cheaper padded together than run apart, were it not for the kernel rule
    mix += [longest[: LONG_TOKENS + k] for k in (-2, -1, 0, 0, 1, 2, 40, 41)]
    together = encoder._encode_sequences(mix)
    for doc, vectors in zip(mix, together, strict=True):
        np.testing.assert_array_equal(encoder._encode_sequences([doc])[0], vectors)
