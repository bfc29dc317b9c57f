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
        # each window's tokens are one run of the body (window_of_token never decreases): slices, no stacked copy
        changes = np.flatnonzero(np.diff(self.window_of_token)) + 1
        runs = zip(np.concatenate([[0], changes]), np.concatenate([changes, [len(self.window_of_token)]]), strict=True)
        body = [outputs[self.window_of_token[a]][2 + self.offset_in_window[a] : 2 + self.offset_in_window[b - 1] + 1]
                for a, b in runs]
        return np.concatenate([outputs[0][:2], *body, outputs[-1][-1:]], axis=0)


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
    start = np.array(starts)
    best = _most_central_window(start, window, len(body))
    return DocumentWindows(sequences, best, np.arange(len(body)) - start[best])


def _most_central_window(starts: np.ndarray, window: int, length: int) -> np.ndarray:
    """Per body position, the window (of `window` tokens, sorted `starts` covering the body) where its distance to
    the nearer edge is largest; the first such window on ties. That distance is (window - 1) / 2 minus the distance
    to the window's center, so this is the nearest center: O(n log w), not the (windows x n) table of every
    distance, which took 11 s and 3.1 GB for a 1 MB document."""
    twice_centers = 2 * starts + window - 1
    twice_positions = 2 * np.arange(length)
    right = np.minimum(np.searchsorted(twice_centers, twice_positions), len(starts) - 1)
    left = np.maximum(right - 1, 0)
    left_nearer = np.abs(twice_positions - twice_centers[left]) <= np.abs(twice_centers[right] - twice_positions)
    return np.where(left_nearer, left, right)
