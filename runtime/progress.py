"""Progress reporting for long encode jobs: tqdm when installed, a plain stderr line otherwise."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager


class _Silent:
    def update(self, n: int) -> None:
        pass


class _StderrBar:
    """Minimal fallback: rewrites one stderr line with done/total."""

    def __init__(self, total: int, unit: str, desc: str) -> None:
        self.total, self.unit, self.desc, self.done = total, unit, desc, 0

    def update(self, n: int) -> None:
        self.done += n
        sys.stderr.write(f"\r{self.desc}: {self.done}/{self.total} {self.unit}")
        if self.done >= self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


@contextmanager
def progress_bar(enabled: bool, total: int, unit: str, desc: str) -> Iterator[object]:
    """A context giving an object with `.update(n)`; silent unless `enabled`."""
    if not enabled:
        yield _Silent()
        return
    try:
        from tqdm import tqdm
    except ImportError:
        yield _StderrBar(total, unit, desc)
        return
    with tqdm(total=total, unit=unit, desc=desc, file=sys.stderr) as bar:
        yield bar
