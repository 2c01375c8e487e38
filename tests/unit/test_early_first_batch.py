"""trainer.data.EarlyFirstBatch: the first batch is fetched on a helper thread from the start
(a worker's data pipeline starts while its models load); the items and their order are the
wrapped iterator's."""

from __future__ import annotations

import threading

import pytest

from trainer.data import EarlyFirstBatch


def test_first_item_fetched_ahead_on_another_thread_then_same_sequence():
    started = threading.Event()
    threads = []

    def items():
        for i in range(4):
            threads.append(threading.current_thread().name)
            started.set()
            yield i

    batches = EarlyFirstBatch(items())
    assert started.wait(timeout=30), "the first item was not fetched ahead"
    assert list(batches) == [0, 1, 2, 3]
    assert threads[0].startswith("rglcd-first-batch")
    assert set(threads[1:]) == {threading.current_thread().name}


def test_an_error_of_the_first_fetch_reaches_the_caller():
    def broken():
        raise ValueError("the training data has fewer rows than one global batch")
        yield  # a generator

    batches = EarlyFirstBatch(broken())
    with pytest.raises(ValueError, match="fewer rows"):
        next(batches)
