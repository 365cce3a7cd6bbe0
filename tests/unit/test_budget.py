"""shared.budget.DecodeBudget: bytes held at once never exceed the capacity, across threads."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from shared.budget import DecodeBudget
from shared.errors import ImageTooLargeToDecodeError, InvalidImageError


def test_holders_wait_until_their_bytes_fit_and_never_exceed_the_capacity() -> None:
    budget = DecodeBudget(100)
    inside, most = [0], [0]
    lock = threading.Lock()

    def work(nbytes: int) -> None:
        with budget.hold(nbytes):
            with lock:
                inside[0] += nbytes
                most[0] = max(most[0], inside[0])
            time.sleep(0.01)
            with lock:
                inside[0] -= nbytes

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, [60, 60, 30, 30, 30, 100, 10, 90] * 3))
    assert most[0] <= 100 and budget.peak <= 100
    assert most[0] >= 60  # it did run things side by side
    assert budget.used == 0


def test_a_request_over_the_whole_budget_is_refused_at_once() -> None:
    budget = DecodeBudget(1000)
    with pytest.raises(ImageTooLargeToDecodeError) as info, budget.hold(1001, key="incoming/big.png"):
        pass
    assert isinstance(info.value, InvalidImageError)
    assert "'incoming/big.png'" in str(info.value) and str(info.value).endswith(".")
    assert budget.used == 0


def test_bytes_are_given_back_when_the_block_raises() -> None:
    budget = DecodeBudget(10)
    with pytest.raises(RuntimeError), budget.hold(10):
        raise RuntimeError("decoder bug")
    with budget.hold(10):
        assert budget.used == 10


def test_the_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError):
        DecodeBudget(0)
