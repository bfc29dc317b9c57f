"""A seeded, realistic document-length mix: log-normal lengths between 20 and 2048 tokens, median 150.

Web passages are long-tailed: most are a paragraph, a few run to pages. Batch planning
(runtime/planning.py) and `make bench` are measured on this mix (docs/benchmarks.md).
"""

from __future__ import annotations

import numpy as np

from colbert_onnx.config import EncoderConfig
from colbert_onnx.tokenization import pad_batch

DEFAULTS = EncoderConfig()  # the encoder's own batch limits, which run_planned plans with unless told

MEDIAN_TOKENS = 150
SIGMA = 1.0  # of log(length): a quarter of the documents are under 77 tokens, one in 25 over 750
MIN_TOKENS, MAX_TOKENS = 20, 2048


def document_lengths(count: int, seed: int = 0) -> np.ndarray:
    """`count` int64 lengths in tokens (specials included), log-normal around the median, clipped to the range."""
    rng = np.random.default_rng(seed)
    lengths = np.exp(rng.normal(np.log(MEDIAN_TOKENS), SIGMA, size=count))
    return np.clip(np.rint(lengths), MIN_TOKENS, MAX_TOKENS).astype(np.int64)


def documents(count: int, seed: int = 0, marker: int = 250003, vocab: int = 500) -> list[np.ndarray]:
    """Framed token-id documents `<s> marker ids... </s>` with the lengths of `document_lengths(count, seed)`."""
    rng = np.random.default_rng(seed + 1)
    out = []
    for length in document_lengths(count, seed):
        ids = rng.integers(5, vocab, size=int(length)).astype(np.int64)
        ids[0], ids[1], ids[-1] = 0, marker, 2
        out.append(ids)
    return out


def padded_fraction(lengths: np.ndarray, batches: list[np.ndarray]) -> float:
    """Share of the tokens sent to the model that are padding, for batches padded to their longest row."""
    sent = sum(len(b) * int(lengths[b].max()) for b in batches)
    return 1.0 - int(lengths.sum()) / sent if sent else 0.0


def run_planned(run, planner, docs: list[np.ndarray], batch_size: int = DEFAULTS.batch_size,
                max_batch_tokens: int | None = DEFAULTS.max_batch_tokens, pad_id: int = 1) -> float:
    """Runs `run(ids, mask)` on the batches `planner(lengths, batch_size, max_batch_tokens)` makes of `docs`,
    right-padded with `pad_id` as the encoder pads (its batch limits by default); returns the padded
    fraction of the tokens sent."""
    lengths = np.array([len(d) for d in docs], dtype=np.int64)
    batches = planner(lengths, batch_size, max_batch_tokens)
    for batch in batches:
        run(*pad_batch([docs[i] for i in batch], pad_id))
    return padded_fraction(lengths, batches)
