"""Micro-batching: requests from many clients are merged into shared ONNX runs on worker threads.

A job is one request's TokenizedBatch (tokenized once, on arrival); the batcher concatenates the
waiting jobs' batches and runs the encoder's ``encode_ids`` on the merged one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass

import numpy as np

from ..tokenization import TokenizedBatch

RunFn = Callable[[TokenizedBatch], Sequence[np.ndarray]]

# How often the gathering loop looks at the queue while it waits for more work (seconds).
_POLL_S = 0.0005


class Overloaded(Exception):
    """The batcher's queue is full; the client should retry later."""


class ShuttingDown(Exception):
    """The batcher was closed before this job ran."""


@dataclass
class _Job:
    batch: TokenizedBatch
    future: asyncio.Future


class MicroBatcher:
    """One bounded queue and one gathering task per (input_type, dim).

    A job is one request's tokenized texts. The gathering task takes the first waiting job, then keeps
    taking jobs for at most `max_wait_s` or until `max_batch_texts` texts are gathered, runs
    `run(merged batch)` on `executor` (never on the event loop) and hands each job its slice.
    """

    def __init__(
        self,
        run: RunFn,
        executor: Executor,
        max_batch_texts: int = 64,
        max_wait_s: float = 0.002,
        max_queue: int = 1024,
        name: str = "batcher",
    ) -> None:
        self._run = run
        self._executor = executor
        self.max_batch_texts = max_batch_texts
        self.max_wait_s = max_wait_s
        self.name = name
        self._queue: asyncio.Queue[_Job] = asyncio.Queue(maxsize=max_queue)
        self._task: asyncio.Task | None = None
        self._closed = False
        self.batches_run = 0
        self.texts_run = 0

    @property
    def queued(self) -> int:
        """Jobs waiting in the queue (not yet gathered)."""
        return self._queue.qsize()

    def start(self) -> None:
        """Start the gathering task on the running loop (idempotent)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._gather_forever(), name=self.name)

    async def submit(self, batch: TokenizedBatch) -> list[np.ndarray]:
        """Queue `batch` as one job and wait for its vectors; Overloaded when the queue is full."""
        if self._closed:
            raise ShuttingDown(f"{self.name} is shut down")
        self.start()
        job = _Job(batch, asyncio.get_running_loop().create_future())
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            raise Overloaded(f"{self.name} queue is full ({self._queue.maxsize} requests waiting)") from None
        return await job.future

    async def _gather(self) -> list[_Job]:
        """The next jobs to run: the first one, plus whatever arrives within max_wait_s, up to max_batch_texts."""
        jobs = [await self._queue.get()]
        count = len(jobs[0].batch)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        while count < self.max_batch_texts:
            try:
                job = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                if loop.time() >= deadline:
                    break
                await asyncio.sleep(_POLL_S)
                continue
            jobs.append(job)
            count += len(job.batch)
        return jobs

    async def _gather_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            jobs = [job for job in await self._gather() if not job.future.done()]  # clients that went away
            if not jobs:
                continue
            try:
                merged = TokenizedBatch.concat([job.batch for job in jobs])
                vectors = await loop.run_in_executor(self._executor, self._run, merged)
            except asyncio.CancelledError:
                self._fail(jobs, ShuttingDown(f"{self.name} is shut down"))
                raise
            except Exception as exc:  # handed to each request, which maps it to an HTTP error
                self._fail(jobs, exc)
                continue
            self.batches_run += 1
            self.texts_run += len(merged)
            start = 0
            for job in jobs:
                stop = start + len(job.batch)
                if not job.future.done():
                    job.future.set_result(list(vectors[start:stop]))
                start = stop

    @staticmethod
    def _fail(jobs: list[_Job], exc: BaseException) -> None:
        for job in jobs:
            if not job.future.done():
                job.future.set_exception(exc)

    async def close(self) -> None:
        """Stop gathering; jobs still queued fail with ShuttingDown (uvicorn drains requests before this)."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        while not self._queue.empty():
            self._fail([self._queue.get_nowait()], ShuttingDown(f"{self.name} is shut down"))
