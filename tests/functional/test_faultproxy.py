"""devstack.faultproxy: each injected fault reaches botocore as S3's would, and the key limit holds."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from devstack.faultproxy import FaultProxy
from devstack.moto_server import MotoServer
from shared.config import S3Settings
from shared.errors import KeyTooLongError, TransientStorageError
from shared.storage import ObjectStore, make_client


@pytest.fixture()
def direct(s3_client: Any, bucket: str) -> ObjectStore:
    return ObjectStore(s3_client, bucket)


def _through(proxy: FaultProxy, bucket: str, attempts: int = 1) -> ObjectStore:
    client = make_client(S3Settings(proxy.endpoint_url, "us-east-1"), max_attempts=attempts, read_timeout=0.5)
    return ObjectStore(client, bucket)


@pytest.fixture()
def proxy_for(moto_server: MotoServer) -> Iterator[Callable[..., FaultProxy]]:
    proxies: list[FaultProxy] = []

    def make(kind: str | None, rate: float = 1.0) -> FaultProxy:
        proxy = FaultProxy(moto_server.endpoint_url, rate=rate, mix={kind or "500": 1.0}, stall_s=1.0).__enter__()
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        proxy.__exit__()


@pytest.mark.parametrize(("kind", "applied"), [("500", False), ("slowdown", False), ("reset", False),
                                               ("lost", True), ("timeout", True)])
def test_each_fault_is_transient_and_lost_ones_are_applied(kind: str, applied: bool, proxy_for, bucket: str,
                                                           direct: ObjectStore) -> None:
    store = _through(proxy_for(kind), bucket)
    with pytest.raises(TransientStorageError):
        store.put(f"results/{kind}.json", b"{}")
    assert (direct.head(f"results/{kind}.json") is not None) is applied


def test_without_faults_requests_pass_through_whole(proxy_for, bucket: str, direct: ObjectStore) -> None:
    proxy = proxy_for(None, rate=0.0)
    store = _through(proxy, bucket)
    etag = store.put("incoming/a b+ü.jpg", b"x" * 100_000, metadata={"k": "v"})
    assert store.get("incoming/a b+ü.jpg").body == b"x" * 100_000
    assert store.head("incoming/a b+ü.jpg").etag == etag == direct.head("incoming/a b+ü.jpg").etag  # type: ignore
    assert proxy.requests == 3 and not proxy.counts


def test_retries_absorb_occasional_faults(proxy_for, bucket: str) -> None:
    proxy = proxy_for("reset", rate=0.4)
    store = _through(proxy, bucket, attempts=10)
    for i in range(8):
        store.put(f"results/{i}.json", b"{}")
    assert proxy.counts["reset"] > 0


def test_keys_over_1024_bytes_are_refused_as_on_s3(proxy_for, bucket: str) -> None:
    store = _through(proxy_for(None, rate=0.0), bucket)
    store.put("incoming/" + "k" * 1015, b"ok")  # 1,024 bytes: fine
    with pytest.raises(KeyTooLongError):
        store.put("incoming/" + "k" * 1016, b"no")
