"""Batch planning for document encoding: which sequences run together, with as little padding as pays.

A batch is a run of sequences adjacent in length order, padded to its longest, and the plan minimizes
the tokens sent plus a fixed cost per run (a run reads every weight once, so a run of a few dozen
tokens is memory-bound: measured ~0.77x the tokens/s of 256-token runs, docs/benchmarks.md). The optimum
over all such plans is found exactly by dynamic programming.

One rule keeps every sequence on one attention kernel whatever its batch-mates: the exported graph
runs attention without the key padding mask (onnxruntime's flash kernel) on unpadded batches of
LONG_TOKENS or more (export/attention.py), and the kernels round differently. So a batch whose longest
sequence has LONG_TOKENS or more holds sequences of exactly that length (unpadded: the flash kernel),
and shorter sequences batch only with shorter ones (the masked kernel). A document's vectors then do
not depend on what else is encoded with it, in int8 too, where requantization turns the kernels'
~1e-7 difference into ~1e-3. Long sequences fill the GEMMs alone, so they lose nothing by it.
"""

from __future__ import annotations

import numpy as np

from .errors import InvalidInputError

# Per-run cost in tokens of work, fitted to run time = c x (tokens + overhead) on runs of 32-512 tokens of
# the 4-layer full-width int8 graph (10-17 tokens by CPU time, 8-15 by wall clock;
# docs/runs/2026-12-01-batch-planning.md).
RUN_OVERHEAD_TOKENS = 16
# From this length a sequence runs at full GEMM efficiency alone (docs/benchmarks.md) and the graph's
# attention skips the mask when its batch is unpadded (export/attention.py reads this constant).
LONG_TOKENS = 256


def plan_batches(
    lengths: np.ndarray,
    batch_size: int,
    max_batch_tokens: int | None,
    run_overhead_tokens: int = RUN_OVERHEAD_TOKENS,
    long_tokens: int = LONG_TOKENS,
) -> list[np.ndarray]:
    """Sequence indices grouped into batches, longest first: at most `batch_size` sequences and
    `max_batch_tokens` padded tokens (rows x longest row) each, minimizing padded tokens plus
    `run_overhead_tokens` per batch; a batch whose longest sequence has `long_tokens` or more holds
    sequences of that one length only (no padding)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")
    if not len(order):
        return []
    longest = int(lengths[order[0]])
    if max_batch_tokens is not None and longest > max_batch_tokens:
        raise InvalidInputError(f"max_batch_tokens={max_batch_tokens} is smaller than one sequence of {longest} "
                                f"tokens: raise it to at least {longest}, or lower document_max_length (windows: the "
                                "window size) to at most it")
    ends = _best_batch_ends(lengths[order], batch_size, max_batch_tokens, run_overhead_tokens, long_tokens)
    return [order[start:end] for start, end in zip([0, *ends[:-1]], ends, strict=True)]


def _best_batch_ends(
    sorted_lengths: np.ndarray, batch_size: int, max_batch_tokens: int | None, overhead: int, long_tokens: int
) -> list[int]:
    """End positions of the cheapest split of lengths sorted longest first into consecutive batches.

    cost[j] = min over feasible starts i of cost[i] + (j - i) * sorted_lengths[i] + overhead; a batch
    [i, j) is feasible when it is small enough and, if its longest is long, unpadded.
    """
    n = len(sorted_lengths)
    cost = np.full(n + 1, np.inf)
    cost[0] = 0.0
    best_start = np.zeros(n + 1, dtype=np.int64)
    # first position of each run of equal lengths: a long batch may not reach past it
    same_from = np.zeros(n, dtype=np.int64)
    for j in range(1, n):
        same_from[j] = same_from[j - 1] if sorted_lengths[j] == sorted_lengths[j - 1] else j
    for j in range(1, n + 1):
        starts = np.arange(max(0, j - batch_size), j)
        rows = j - starts
        padded = rows * sorted_lengths[starts]
        feasible = (sorted_lengths[starts] < long_tokens) | (starts >= same_from[j - 1])
        if max_batch_tokens is not None:
            feasible &= padded <= max_batch_tokens
        total = np.where(feasible, cost[starts] + padded + overhead, np.inf)
        k = int(np.argmin(total))
        cost[j], best_start[j] = total[k], starts[k]
    ends = []
    j = n
    while j > 0:
        ends.append(j)
        j = int(best_start[j])
    return ends[::-1]


def plan_padded_batches(lengths: np.ndarray, batch_size: int, max_batch_tokens: int | None) -> list[np.ndarray]:
    """The planner used until 2026-12-01, kept as the benchmark baseline: sequences sorted longest first,
    filled greedily up to `batch_size` rows and `max_batch_tokens` padded tokens, whatever the padding."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    batches: list[np.ndarray] = []
    current: list[int] = []
    for idx in order:
        longest = int(lengths[current[0]]) if current else int(lengths[idx])
        if max_batch_tokens is not None and longest > max_batch_tokens:
            raise InvalidInputError(
                f"max_batch_tokens={max_batch_tokens} is smaller than one sequence of {longest} tokens"
            )
        fits_tokens = max_batch_tokens is None or longest * (len(current) + 1) <= max_batch_tokens
        if current and (len(current) >= batch_size or not fits_tokens):
            batches.append(np.array(current))
            current = []
        current.append(int(idx))
    if current:
        batches.append(np.array(current))
    return batches
