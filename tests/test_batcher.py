"""`QueryBatcher`: concurrent calls share model calls, each caller gets its own rows, failures reach all.

The encode function here is a plain numpy function of the texts (row = [len(text), index in call]),
so every row can be checked by hand; the real ONNX encoder behind it is tested in test_service.py.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import pytest

from service.batcher import QueryBatcher


class Gated:
    """An encode that records each call's texts and holds every call until `release`."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[list[str]] = []
        self.open = threading.Event()
        self.fail_on = fail_on
        self.running = 0
        self.max_running = 0
        self._lock = threading.Lock()

    def __call__(self, texts: list[str]) -> np.ndarray:
        with self._lock:
            self.calls.append(list(texts))
            self.running += 1
            self.max_running = max(self.max_running, self.running)
        self.open.wait(10)
        with self._lock:
            self.running -= 1
        if self.fail_on in texts:
            raise ValueError(f"cannot encode {self.fail_on!r}")
        return np.array([[len(t), i] for i, t in enumerate(texts)], dtype=np.float32)


def until(cond: Callable[[], bool], timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            raise AssertionError("condition not reached")
        time.sleep(0.005)


def submit_while_busy(
    batcher: QueryBatcher, enc: Gated, first: list[str], rest: list[list[str]], pool: ThreadPoolExecutor
) -> list[Future[np.ndarray]]:
    """`first` starts a call and is held in it; `rest` queue behind it; then every call is let go."""
    futures = [pool.submit(batcher, first)]
    until(lambda: len(enc.calls) == 1)
    futures += [pool.submit(batcher, texts) for texts in rest]
    until(lambda: batcher.waiting == len(rest))
    enc.open.set()
    return futures


def test_requests_waiting_share_one_call_and_get_their_own_rows() -> None:
    enc = Gated()
    batcher = QueryBatcher(enc, lanes=1, max_texts=64)
    rest = [["bb"], ["ccc", "dddd"], ["e"]]
    with ThreadPoolExecutor(4) as pool:
        futures = submit_while_busy(batcher, enc, ["a"], rest, pool)
        out = [f.result(10) for f in futures]
    assert enc.calls[0] == ["a"]
    assert len(enc.calls) == 2 and sorted(enc.calls[1]) == ["bb", "ccc", "dddd", "e"]
    for texts, rows in zip([["a"], *rest], out, strict=True):
        assert rows.shape == (len(texts), 2)
        assert rows[:, 0].tolist() == [len(t) for t in texts]  # each caller's own rows, in its own order
    assert (batcher.calls, batcher.requests) == (2, 4)


def test_alone_a_call_runs_at_once() -> None:
    enc = Gated()
    enc.open.set()
    batcher = QueryBatcher(enc, lanes=1, max_texts=64)
    t0 = time.perf_counter()
    rows = batcher(["only"])
    assert time.perf_counter() - t0 < 1.0
    assert rows.tolist() == [[4.0, 0.0]] and enc.calls == [["only"]]


def test_lanes_bound_concurrent_calls() -> None:
    enc = Gated()
    batcher = QueryBatcher(enc, lanes=2, max_texts=64)
    with ThreadPoolExecutor(6) as pool:
        first = [pool.submit(batcher, [f"q{i}"]) for i in range(2)]
        until(lambda: len(enc.calls) == 2)  # two lanes: two calls in flight at once
        rest = [pool.submit(batcher, [f"r{i}"]) for i in range(4)]
        until(lambda: batcher.waiting == 4)
        enc.open.set()
        for f in first + rest:
            f.result(10)
    assert enc.max_running == 2
    assert sum(len(c) for c in enc.calls) == 6 and len(enc.calls) <= 4


def test_max_texts_splits_calls_but_serves_an_oversized_request_alone() -> None:
    enc = Gated()
    batcher = QueryBatcher(enc, lanes=1, max_texts=3)
    with ThreadPoolExecutor(4) as pool:
        futures = submit_while_busy(batcher, enc, ["x"], [["a", "b"], ["c", "d"], ["e", "f", "g", "h"]], pool)
        out = [f.result(10) for f in futures]
    assert all(len(c) <= 3 or len(c) == 4 and c == ["e", "f", "g", "h"] for c in enc.calls)
    assert [r.shape[0] for r in out] == [1, 2, 2, 4]
    assert len(enc.calls) == 4  # [x], [a b], [c d], [e f g h]: no call over 3 unless one request is


def test_a_failed_call_fails_every_request_in_it_and_the_next_ones_still_run() -> None:
    enc = Gated(fail_on="bad")
    batcher = QueryBatcher(enc, lanes=1, max_texts=64)
    with ThreadPoolExecutor(4) as pool:
        futures = submit_while_busy(batcher, enc, ["ok"], [["bad"], ["fine"]], pool)
        assert futures[0].result(10).shape == (1, 2)
        for f in futures[1:]:  # both shared the failing call
            with pytest.raises(ValueError, match="cannot encode 'bad'"):
                f.result(10)
    assert batcher(["after"]).shape == (1, 2)  # the lane was freed


@pytest.mark.parametrize(("lanes", "max_texts"), [(0, 8), (1, 0)])
def test_bad_sizes(lanes: int, max_texts: int) -> None:
    with pytest.raises(ValueError, match="must be >= 1"):
        QueryBatcher(Gated(), lanes=lanes, max_texts=max_texts)
