"""Long documents as overlapping windows: one vector per original token, from its most central window."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# max_length that never truncates (documents are split into windows afterwards instead).
UNTRUNCATED = 1 << 40


@dataclass(frozen=True)
class DocumentWindows:
    """The framed sequences to encode for one document, and how to merge their vectors back."""

    sequences: list[np.ndarray]
    window_of_token: np.ndarray | None = None  # body position -> window index
    offset_in_window: np.ndarray | None = None  # body position -> position inside that window's body

    def merge(self, outputs: list[np.ndarray]) -> np.ndarray:
        """(document tokens, dim) vectors: `<s>`/marker from the first window, `</s>` from the last."""
        if self.window_of_token is None:
            (only,) = outputs
            return only
        stacked = np.stack(outputs)  # every window has the same length
        body = stacked[self.window_of_token, 2 + self.offset_in_window]
        return np.concatenate([outputs[0][:2], body, outputs[-1][-1:]], axis=0)


def split_windows(ids: np.ndarray, max_length: int, stride: int) -> DocumentWindows:
    """Split framed ids `<s> marker body </s>` into windows of at most `max_length` tokens in all.

    Window starts advance by `stride`; the last window is aligned to the end of the body. Each body
    token is taken from the window where its distance to the nearer window edge is largest.
    """
    if len(ids) <= max_length:
        return DocumentWindows([ids])
    head, body, tail = ids[:2], ids[2:-1], ids[-1:]
    window = max_length - 3
    starts = list(range(0, len(body) - window + 1, stride))
    if starts[-1] + window < len(body):
        starts.append(len(body) - window)
    sequences = [np.concatenate([head, body[s : s + window], tail]) for s in starts]
    positions = np.arange(len(body))
    begin = np.array(starts)[:, None]
    inside = (positions >= begin) & (positions < begin + window)
    centrality = np.where(inside, np.minimum(positions - begin, begin + window - 1 - positions), -1)
    best = centrality.argmax(axis=0)
    return DocumentWindows(sequences, best, positions - np.array(starts)[best])
