"""Conditional writes and the key limit: against the moto server (conftest), and the memory double."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from shared.errors import (
    KeyTooLongError,
    PreconditionFailedError,
    StorageError,
    TransientStorageError,
)
from shared.storage import MAX_KEY_BYTES, ObjectStore, translate
from tests.memory_store import MemoryStore
from tests.unit.test_storage import client_error


def _both(store: ObjectStore) -> list[ObjectStore]:
    return [store, MemoryStore(store.bucket)]


def test_if_none_match_writes_once_and_the_loser_gets_a_typed_error(store: ObjectStore) -> None:
    for s in _both(store):
        etag = s.put_json("results/a.json", {"n": 1}, if_none_match=True)
        with pytest.raises(PreconditionFailedError) as info:
            s.put_json("results/a.json", {"n": 2}, if_none_match=True)
        assert not info.value.retryable and str(info.value).endswith(".")
        assert s.get_json("results/a.json") == {"n": 1}
        assert s.head("results/a.json").etag == etag  # type: ignore[union-attr]


def test_if_match_replaces_only_the_version_that_was_read(store: ObjectStore) -> None:
    for s in _both(store):
        first = s.put_json("results/b.json", {"model": "v1"})
        second = s.put_json("results/b.json", {"model": "v2"}, if_match=first)
        assert s.get_json("results/b.json") == {"model": "v2"}
        with pytest.raises(PreconditionFailedError):  # stale: someone replaced it since
            s.put_json("results/b.json", {"model": "v3"}, if_match=first)
        assert s.head("results/b.json").etag == second  # type: ignore[union-attr]
        with pytest.raises(PreconditionFailedError):  # deleted meanwhile (S3 answers 404)
            s.put_json("results/gone.json", {"model": "v3"}, if_match=first)


def _race(s: ObjectStore, writers: int) -> tuple[list[int], list[int]]:
    """``writers`` threads released at once, each writing the same new key with If-None-Match."""
    won: list[int] = []
    lost: list[int] = []
    barrier = threading.Barrier(writers)

    def write(n: int) -> None:
        barrier.wait()
        try:
            s.put_json("results/race.json", {"writer": n}, if_none_match=True)
            won.append(n)
        except PreconditionFailedError:
            lost.append(n)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return won, lost


def test_racing_first_writes_store_exactly_one(store: ObjectStore) -> None:
    for s in _both(store):
        won, lost = _race(s, 6)
        assert len(won) == 1 and len(lost) == 5
        assert s.get_json("results/race.json") == {"writer": won[0]}


@pytest.mark.parametrize(("code", "status", "expected"), [
    ("PreconditionFailed", 412, PreconditionFailedError),
    ("ConditionalRequestConflict", 409, TransientStorageError),
    ("KeyTooLongError", 400, KeyTooLongError),
])
def test_translate_conditional_and_key_errors(code: str, status: int, expected: type) -> None:
    exc = translate(client_error(code, status, "PutObject"), bucket="b", key="k")
    assert type(exc) is expected and isinstance(exc, StorageError)


@pytest.mark.parametrize("op", [
    lambda s, k: s.put(k, b"x"), lambda s, k: s.get(k), lambda s, k: s.head(k),
])
def test_the_memory_store_enforces_s3s_key_limit(op: Callable[[ObjectStore, str], object]) -> None:
    store = MemoryStore()
    at_limit = "incoming/" + "é" * ((MAX_KEY_BYTES - 9) // 2)  # 2 bytes each in UTF-8
    assert len(at_limit.encode()) <= MAX_KEY_BYTES < len((at_limit + "é").encode())
    store.put(at_limit, b"ok")
    with pytest.raises(KeyTooLongError):
        op(store, at_limit + "é")


def test_derived_keys_over_the_limit_fall_back_to_a_hash_of_the_source() -> None:
    import hashlib

    from shared.storage import derived_key

    short = "incoming/cam1/a.jpg"
    assert derived_key("results/", "cam1/a.jpg", ".json", source_key=short) == "results/cam1/a.jpg.json"
    for length in (1010, 1021, 1024):
        source = "incoming/" + "é" * ((length - 9) // 2) + "x" * ((length - 9) % 2)
        assert len(source.encode()) == length
        key = derived_key("results/", source[len("incoming/"):], ".json", source_key=source)
        assert len(key.encode()) <= MAX_KEY_BYTES
        if len(f"results/{source[9:]}.json".encode()) > MAX_KEY_BYTES:
            assert key == f"results/_long/{hashlib.sha256(source.encode()).hexdigest()}.json"
        # Deterministic: a repeated delivery finds the same result.
        assert key == derived_key("results/", source[9:], ".json", source_key=source)
