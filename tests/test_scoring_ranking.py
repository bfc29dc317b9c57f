"""ranking.rank: a typed error for scores that are not one number per document."""

from __future__ import annotations

import numpy as np
import pytest

from colbert_onnx import InvalidInputError
from colbert_onnx.ranking import rank


def test_rank_refuses_missing_scores():
    with pytest.raises(InvalidInputError, match="scores must be an array of real numbers, got NoneType"):
        rank(None)


def test_rank_refuses_a_score_matrix():
    with pytest.raises(InvalidInputError, match=r"scores must be 1-D, one per document .* \(2, 3\)"):
        rank(np.ones((2, 3), np.float32))
