"""Ranking scores: one rule for ColbertEncoder.rerank and the server's /v1/rerank (best first, stable)."""

from __future__ import annotations

import numbers

import numpy as np

from .errors import InvalidInputError
from .vectors import real_array


def check_top_n(top_n: object) -> int | None:
    """`top_n` as an int if it is a positive int (numpy's too) or None (all), else InvalidInputError."""
    if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, numbers.Integral) or top_n < 1):
        raise InvalidInputError(f"top_n must be a positive int or None, got {top_n!r}")
    return None if top_n is None else int(top_n)


def rank(scores: np.ndarray, top_n: int | None = None) -> list[tuple[int, float]]:
    """(index, score) of the `top_n` best scores (None: all), best first; equal scores keep input order."""
    top_n = check_top_n(top_n)
    values = real_array(scores, "scores")
    if values.ndim != 1:
        raise InvalidInputError(f"scores must be 1-D, one per document (rank each query alone), got {values.shape}")
    order = np.argsort(-values, kind="stable")[: top_n or len(values)]
    return [(int(i), float(values[i])) for i in order]
