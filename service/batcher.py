"""Concurrent query encodes coalesced into shared model calls (group commit), so load costs less CPU.

A short query's ONNX forward pass costs nearly the same for one text as for several: the time goes to
dispatching the graph's operators, not to arithmetic on ten tokens. Under concurrent load each
request paying for its own pass is what saturates a small box. Here at most `lanes` encodes run at
once; a request that arrives while every lane is busy waits, and the next free lane encodes every
waiting request in one call. Alone, a request never waits (nothing is held back for a batch to
fill), so single-client latency is unchanged.

No thread of its own: the caller that finds a free lane does the work for everyone waiting (the
leader); the others sleep on a condition until their rows are ready.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np


class _Job:
    __slots__ = ("done", "error", "result", "taken", "texts")

    def __init__(self, texts: list[str]) -> None:
        self.texts = texts
        self.result: np.ndarray | None = None
        self.error: BaseException | None = None
        self.taken = False  # in a running call (maybe another thread's)
        self.done = False


class QueryBatcher:
    """`batcher(texts)` returns what `encode(texts)` would, coalescing calls made at the same time.

    `max_texts` caps one shared call (a single request larger than that still runs, alone). Rows
    are per-text results of `encode`, so they match a lone call's up to float rounding from padding.
    """

    def __init__(self, encode: Callable[[list[str]], np.ndarray], lanes: int, max_texts: int) -> None:
        if lanes < 1 or max_texts < 1:
            raise ValueError(f"lanes={lanes} and max_texts={max_texts} must be >= 1")
        self._encode = encode
        self._lanes = lanes
        self._max_texts = max_texts
        self._cond = threading.Condition()
        self._pending: list[_Job] = []
        self._busy = 0
        self.calls = 0  # model calls made
        self.requests = 0  # requests served; requests / calls = mean coalescing

    @property
    def waiting(self) -> int:
        """Requests queued for the next call (not yet in a running one)."""
        with self._cond:
            return len(self._pending)

    def __call__(self, texts: list[str]) -> np.ndarray:
        job = _Job(texts)
        with self._cond:
            self._pending.append(job)
        while True:
            with self._cond:
                while not job.done and (job.taken or self._busy >= self._lanes):
                    self._cond.wait()
                if job.done:
                    break
                batch = self._take()
                self._busy += 1
            self._run(batch)  # may serve others' jobs and not yet this one (max_texts): loop
        if job.error is not None:
            raise job.error
        if job.result is None:  # the leader was interrupted (not an Exception)
            raise RuntimeError("the shared query encode was interrupted")
        return job.result

    def _take(self) -> list[_Job]:
        """The oldest waiting jobs, up to `max_texts` texts (at least one job). Caller holds the lock."""
        batch: list[_Job] = []
        size = 0
        while self._pending and (not batch or size + len(self._pending[0].texts) <= self._max_texts):
            job = self._pending.pop(0)
            job.taken = True
            batch.append(job)
            size += len(job.texts)
        return batch

    def _run(self, batch: list[_Job]) -> None:
        try:
            rows = self._encode([t for job in batch for t in job.texts])
            start = 0
            for job in batch:
                job.result = rows[start : start + len(job.texts)]
                start += len(job.texts)
        except Exception as exc:  # noqa: BLE001 - re-raised in every waiting caller, not swallowed
            for job in batch:
                job.error = exc
        finally:
            with self._cond:
                for job in batch:
                    job.done = True
                self._busy -= 1
                self.calls += 1
                self.requests += len(batch)
                self._cond.notify_all()
