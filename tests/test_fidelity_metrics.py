"""The ranking gates judge only the orders the float64 reference resolves (runtime/fidelity.py).

A checkpoint whose MaxSim scores sit within the model's own fp32 rounding of each other (degenerate random heads,
strong outliers: 4 of the first 16 outlier-family members) has no ranking a graph could keep or lose there; the plain
top-10 overlap and Spearman failed an exact fp32 graph on them (top-10 0.65, Spearman 0.42). Scores closer than the
reference's `score_resolution` are ties: a candidate may order them either way, never an order the reference resolves.
numpy only: these run in the base install.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from colbert_onnx.fidelity import (
    RESOLUTION_FACTOR,
    RESOLUTION_FLOOR_ULPS,
    Outputs,
    compare,
    gate_misses,
    passes,
    score_resolution,
    spearman,
    tie_aware_spearman,
    top_k_agreement,
)


def _tied_scores(rng: np.random.Generator, n: int, resolution: float) -> np.ndarray:
    """`n` scores in random groups whose members sit within `resolution` (chained), groups 5x apart."""
    sizes = []
    while sum(sizes) < n:
        sizes.append(int(rng.integers(1, 12)))
    sizes[-1] -= sum(sizes) - n
    levels = 30.0 - 5 * resolution * np.arange(len(sizes)) - rng.uniform(0, 50 * resolution, len(sizes)).cumsum()
    scores = np.concatenate([level - rng.uniform(0, 0.9, size).cumsum() * resolution / 4
                             for level, size in zip(levels, sizes, strict=True)])
    return rng.permutation(scores)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(12, 200), exponent=st.integers(-9, -2))
def test_a_candidate_within_half_the_resolution_agrees_fully_whatever_it_does_inside_ties(seed, n, exponent):
    rng = np.random.default_rng(seed)
    resolution = 10.0**exponent
    reference = _tied_scores(rng, n, resolution)
    candidate = reference + rng.uniform(-0.49, 0.49, n) * resolution
    assert top_k_agreement(reference, candidate, 10, resolution) == 1.0
    assert tie_aware_spearman(reference, candidate, resolution) == pytest.approx(1.0)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(12, 200))
def test_without_ties_the_metrics_are_the_plain_top_k_overlap_and_spearman(seed, n):
    rng = np.random.default_rng(seed)
    reference, candidate = rng.normal(size=n), rng.normal(size=n)
    plain_overlap = len(set(np.argsort(-reference)[:10]) & set(np.argsort(-candidate)[:10])) / 10
    assert top_k_agreement(reference, candidate, 10, 0.0) == pytest.approx(plain_overlap)
    assert tie_aware_spearman(reference, candidate, 0.0) == pytest.approx(spearman(reference, candidate))


@pytest.mark.parametrize("seed", range(8))
def test_swapping_a_resolved_pair_across_the_top_k_boundary_costs_agreement(seed):
    rng = np.random.default_rng(seed)
    reference = rng.uniform(20, 30, 60)
    order = np.argsort(-reference)
    kth, outside = order[9], order[10 + int(rng.integers(0, 40))]
    resolution = (reference[kth] - reference[outside]) / 2  # the pair is resolved
    candidate = reference.copy()
    candidate[kth], candidate[outside] = reference[outside], reference[kth]
    assert top_k_agreement(reference, candidate, 10, resolution) == pytest.approx(0.9)


@pytest.mark.parametrize("seed", range(8))
def test_a_reversed_candidate_fails_spearman_however_many_ties_the_reference_has(seed):
    rng = np.random.default_rng(seed)
    resolution = 1e-5
    reference = _tied_scores(rng, 124, resolution)
    assert tie_aware_spearman(reference, -reference, resolution) < -0.9


def test_a_reference_whose_scores_all_sit_within_the_resolution_leaves_nothing_to_judge():
    reference = 32.0 - np.linspace(0, 3e-6, 50)
    candidate = np.random.default_rng(0).permutation(reference)
    assert top_k_agreement(reference, candidate, 10, 1e-5) == 1.0
    assert tie_aware_spearman(reference, candidate, 1e-5) == 1.0


def test_a_reference_spread_wider_than_the_resolution_still_ranks_its_far_apart_documents():
    reference = 32.0 - np.linspace(0, 3e-6, 50)
    candidate = reference[::-1].copy()
    assert top_k_agreement(reference, candidate, 10, 1e-7) == 0.0
    assert tie_aware_spearman(reference, candidate, 1e-7) == pytest.approx(-1.0)


def test_exact_ties_at_the_top_k_boundary_count_as_in_the_top_k_even_at_zero_resolution():
    reference = np.array([3.0, 2.0, 2.0, 2.0, 1.0])
    candidate = np.array([3.0, 1.9, 2.1, 2.0, 1.0])  # reorders only the tied three
    assert top_k_agreement(reference, candidate, 2, 0.0) == 1.0
    assert tie_aware_spearman(reference, candidate, 0.0) == pytest.approx(1.0)


@pytest.mark.parametrize("seed", range(8))
def test_a_candidate_may_reorder_what_the_reference_does_not_resolve_by_any_amount(seed):
    rng = np.random.default_rng(seed)
    resolution = 1e-4
    cluster = 5.0 + rng.uniform(0, resolution, 6)  # every pair within the resolution
    reference = np.concatenate([[10.0, 9.0], cluster, [1.0, 0.0]])
    candidate = reference.copy()
    candidate[2:8] = rng.permutation(np.linspace(2.0, 8.0, 6))  # far from the reference, inside the resolved bounds
    assert tie_aware_spearman(reference, candidate, resolution) == pytest.approx(1.0)
    assert spearman(reference, candidate) < 0.99


def test_score_resolution_is_the_factor_times_the_largest_fp32_score_error():
    rng = np.random.default_rng(1)
    queries = rng.normal(size=(3, 4, 8))
    documents = [rng.normal(size=(int(n), 8)) for n in rng.integers(2, 9, 5)]
    reference = Outputs(queries, np.concatenate(documents), documents)
    shifted = [d.copy() for d in documents]
    shifted[2][:, 0] += 1e-3  # moves every query's score of document 2 by 1e-3 x the query's token sum on dim 0
    fp32 = Outputs(queries, np.concatenate(shifted), shifted)
    from colbert_onnx.scoring import maxsim

    error = np.abs(maxsim(queries, documents) - maxsim(queries, shifted)).max()
    assert error > 0
    assert score_resolution(reference, fp32) == pytest.approx(RESOLUTION_FACTOR * error)


def _near_tied_pair(seed: int) -> tuple[Outputs, Outputs]:
    """A reference of 60 copies of one document, each 1e-9 off it (scores within ~1e-8 of each other), and a
    candidate 1e-7 off the reference: exact at a resolution of 1e-5, random where every 1e-8 counts."""
    rng = np.random.default_rng(seed)

    def unit(v: np.ndarray) -> np.ndarray:
        return v / np.linalg.norm(v, axis=-1, keepdims=True)

    queries = unit(rng.normal(size=(24, 8, 16)))
    base = unit(rng.normal(size=(10, 16)))
    documents = [unit(base + rng.normal(scale=1e-9, size=base.shape)) for _ in range(60)]
    cand_docs = [unit(d + rng.normal(scale=1e-7, size=d.shape)) for d in documents]
    candidate = Outputs(unit(queries + rng.normal(scale=1e-7, size=queries.shape)), np.concatenate(cand_docs),
                        cand_docs)
    return Outputs(queries, np.concatenate(documents), documents), candidate


@pytest.mark.parametrize("seed", range(4))
def test_compare_judges_rankings_at_the_references_resolution(seed):
    reference, candidate = _near_tied_pair(seed)
    resolved = compare(Outputs(reference.queries, reference.doc_tokens, reference.documents, 1e-5), candidate)
    assert resolved["score_resolution"] == 1e-5
    assert resolved["top10_overlap"] == 1.0 and resolved["spearman"] == 1.0
    assert passes("fp32", resolved)
    plain = compare(reference, candidate)  # what the plain metrics made of the same vectors
    assert plain["score_resolution"] == 0.0
    assert not passes("fp32", plain)


def test_score_resolution_is_never_below_the_float32_spacing_floor_of_the_largest_score():
    rng = np.random.default_rng(2)
    queries = rng.normal(size=(2, 4, 8))
    documents = [rng.normal(size=(5, 8)) for _ in range(3)]
    reference = Outputs(queries, np.concatenate(documents), documents)
    from colbert_onnx.scoring import maxsim

    largest = np.abs(maxsim(queries, documents)).max()
    assert score_resolution(reference, reference) == RESOLUTION_FLOOR_ULPS * float(np.spacing(np.float32(largest)))


def test_gate_misses_names_each_missed_gate_with_its_value_and_threshold():
    metrics = {"mean_token_cosine": 0.9991, "worst_text_mean_token_cosine": 0.9949, "min_token_cosine": 0.97,
               "top10_overlap": 0.95, "spearman": 0.99, "finite": True}
    assert gate_misses("int8", metrics) == ["worst_text_mean_token_cosine 0.9949 < 0.995",
                                            "min_token_cosine 0.97 < 0.98"]
    assert not passes("int8", metrics)
    assert gate_misses("int8", {**metrics, "worst_text_mean_token_cosine": 0.996, "min_token_cosine": 0.99}) == []
    assert gate_misses("fp16", {**metrics, "finite": False}) == ["finite: the vectors hold NaN or inf"]
