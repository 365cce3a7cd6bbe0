"""shared.storage: error translation, pagination and size checks, against moto in-process."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore import exceptions as bce
from botocore.stub import Stubber
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.s3.models import s3_backends

from shared.config import S3Settings
from shared.errors import (
    AccessDeniedError,
    BucketNotFoundError,
    CredentialsError,
    ImageTooLargeError,
    ObjectNotFoundError,
    StorageError,
    TransientStorageError,
    VideoTooLargeError,
)
from shared.storage import ObjectInfo, ObjectStore, make_client, translate

BUCKET = "unit-storage"  # used by translate() tests, which need no bucket
_bucket_ids = itertools.count()


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    """One in-process moto S3 (``mock_aws``) and one client for the whole module: cheap."""
    with mock_aws():
        yield make_client(S3Settings(region="us-east-1"))


@pytest.fixture()
def bucket(client: Any) -> str:
    """A fresh bucket per test, so tests stay independent within the shared mock."""
    name = f"unit-storage-{next(_bucket_ids)}"
    client.create_bucket(Bucket=name)
    return name


@pytest.fixture()
def store(client: Any, bucket: str) -> ObjectStore:
    return ObjectStore(client, bucket)


def client_error(code: str, status: int, operation: str = "GetObject", message: str = "") -> bce.ClientError:
    return bce.ClientError({"Error": {"Code": code, "Message": message},
                            "ResponseMetadata": {"HTTPStatusCode": status}}, operation)


def assert_sentence(exc: BaseException) -> None:
    assert str(exc).endswith("."), str(exc)


# -- translate() on constructed exceptions ----------------------------------------------


@pytest.mark.parametrize(("exc", "key", "expected", "retryable"), [
    pytest.param(client_error("NoSuchBucket", 404), "k", BucketNotFoundError, False, id="NoSuchBucket"),
    pytest.param(client_error("404", 404, "HeadBucket"), None, BucketNotFoundError, False, id="head-bucket-404"),
    pytest.param(client_error("NoSuchKey", 404), "k", ObjectNotFoundError, False, id="NoSuchKey"),
    pytest.param(client_error("404", 404, "HeadObject"), "k", ObjectNotFoundError, False, id="head-object-404"),
    pytest.param(client_error("NotFound", 404, "HeadObject"), "k", ObjectNotFoundError, False, id="NotFound"),
    pytest.param(bce.NoCredentialsError(), "k", CredentialsError, False, id="no-credentials"),
    pytest.param(bce.PartialCredentialsError(provider="env", cred_var="AWS_SECRET_ACCESS_KEY"), "k",
                 CredentialsError, False, id="partial-credentials"),
    pytest.param(client_error("InvalidAccessKeyId", 403), "k", CredentialsError, False, id="InvalidAccessKeyId"),
    pytest.param(client_error("ExpiredToken", 400), "k", CredentialsError, False, id="ExpiredToken"),
    pytest.param(client_error("AccessDenied", 403), "k", AccessDeniedError, False, id="AccessDenied"),
    pytest.param(client_error("403", 403, "HeadObject"), "k", AccessDeniedError, False, id="head-403"),
    pytest.param(client_error("SlowDown", 503), "k", TransientStorageError, True, id="SlowDown"),
    pytest.param(client_error("ServiceUnavailable", 503), "k", TransientStorageError, True, id="ServiceUnavailable"),
    pytest.param(client_error("503", 503, "HeadObject"), "k", TransientStorageError, True, id="head-503"),
    pytest.param(client_error("", 503), "k", TransientStorageError, True, id="bare-503"),
    pytest.param(client_error("InternalError", 500), "k", TransientStorageError, True, id="InternalError"),
    pytest.param(client_error("Whatever", 502), "k", TransientStorageError, True, id="unknown-5xx"),
    pytest.param(bce.EndpointConnectionError(endpoint_url="http://127.0.0.1:9"), "k", TransientStorageError, True,
                 id="endpoint-connection"),
    pytest.param(bce.ReadTimeoutError(endpoint_url="http://127.0.0.1:9"), "k", TransientStorageError, True,
                 id="read-timeout"),
    pytest.param(bce.IncompleteReadError(actual_bytes=5, expected_bytes=9), "k", TransientStorageError, True,
                 id="incomplete-read"),
    pytest.param(bce.ResponseStreamingError(error="connection reset"), "k", TransientStorageError, True,
                 id="response-streaming"),
    pytest.param(client_error("InvalidArgument", 400), "k", StorageError, False, id="other-4xx"),
    pytest.param(RuntimeError("boom"), "k", StorageError, False, id="anything-else"),
])
def test_translate(exc: BaseException, key: str | None, expected: type, retryable: bool) -> None:
    err = translate(exc, bucket=BUCKET, key=key)
    assert type(err) is expected
    assert err.retryable is retryable
    assert err.context["bucket"] == BUCKET
    if key is not None and expected is not BucketNotFoundError:
        assert err.context["key"] == key
        assert f"s3://{BUCKET}/{key}" in str(err)
    assert_sentence(err)


def test_transient_errors_exit_with_the_retry_code() -> None:
    err = translate(client_error("SlowDown", 503), bucket=BUCKET, key="k")
    assert err.exit_code == 4
    assert err.to_dict()["type"] == "TransientStorageError"


# -- the same mappings, end to end through ObjectStore -----------------------------------


def test_missing_bucket(client: Any) -> None:
    missing = ObjectStore(client, "no-such-bucket-here")
    for call in (missing.check_bucket, lambda: missing.get("k"), lambda: list(missing.list("")),
                 lambda: missing.put("k", b"x")):
        with pytest.raises(BucketNotFoundError) as info:
            call()
        assert info.value.context["bucket"] == "no-such-bucket-here"
        assert_sentence(info.value)


def test_check_bucket_passes_for_an_existing_bucket(store: ObjectStore) -> None:
    store.check_bucket()


def test_missing_key(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFoundError) as info:
        store.get("incoming/gone.jpg")
    assert info.value.context == {"bucket": store.bucket, "key": "incoming/gone.jpg"}
    assert_sentence(info.value)
    with pytest.raises(ObjectNotFoundError):
        store.get_json("models/latest.json")
    assert store.head("incoming/gone.jpg") is None


def test_missing_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # No credentials anywhere botocore looks; nothing is sent (the request fails at signing).
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
                 "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                 "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    store = ObjectStore(make_client(S3Settings(endpoint_url="http://127.0.0.1:9", region="us-east-1")), BUCKET)
    with pytest.raises(CredentialsError) as info:
        store.get("incoming/a.jpg")
    assert "AWS_ACCESS_KEY_ID" in str(info.value)
    assert info.value.context == {"bucket": BUCKET, "key": "incoming/a.jpg"}
    assert_sentence(info.value)


def test_throttling_is_transient_and_retryable(store: ObjectStore) -> None:
    with Stubber(store.client) as stub:
        stub.add_client_error("get_object", service_error_code="SlowDown",
                              service_message="Please reduce your request rate.", http_status_code=503)
        with pytest.raises(TransientStorageError) as info:
            store.get("incoming/a.jpg")
    assert info.value.retryable is True
    assert "SlowDown" in str(info.value)
    assert isinstance(info.value.__cause__, bce.ClientError)


def test_a_fault_in_the_middle_of_a_listing_is_translated(store: ObjectStore) -> None:
    with Stubber(store.client) as stub:
        stub.add_response("list_objects_v2", {
            "IsTruncated": True, "NextContinuationToken": "t1", "KeyCount": 1,
            "Contents": [{"Key": "p/a", "ETag": '"e1"', "Size": 1}]})
        stub.add_client_error("list_objects_v2", service_error_code="ServiceUnavailable", http_status_code=503)
        listing = store.list("p/")
        assert next(listing) == ObjectInfo("p/a", "e1", 1)
        with pytest.raises(TransientStorageError):
            next(listing)


# -- list / get / put -------------------------------------------------------------------


def test_list_follows_continuation_tokens_past_1000_keys(client: Any, store: ObjectStore) -> None:
    keys = [f"incoming/cam/{i:05d}.jpg" for i in range(1050)]
    # Seeded straight into moto's backend (in reverse: insertion order must not matter);
    # 1,050 PutObject round trips through botocore would cost seconds and test nothing here.
    backend = s3_backends[DEFAULT_ACCOUNT_ID]["global"]
    for key in reversed(keys):
        backend.put_object(store.bucket, key, b"x")
    for other in ("incoming/camera-2/a.jpg", "incoming-archive/b.jpg", "results/c.json"):
        store.put(other, b"yy")
    pages: list[int] = []

    def count_page(parsed: dict, **_: Any) -> None:
        pages.append(len(parsed.get("Contents", [])))

    client.meta.events.register("after-call.s3.ListObjectsV2", count_page)
    try:
        listed = list(store.list("incoming/cam/"))
    finally:
        client.meta.events.unregister("after-call.s3.ListObjectsV2", count_page)
    assert [item.key for item in listed] == keys  # every key, in S3's (lexicographic) order
    assert pages == [1000, 50]  # really two pages: the 1,000-key cap was passed
    assert all(item.size == 1 and item.etag and '"' not in item.etag for item in listed)


def test_list_of_an_empty_prefix_yields_nothing(store: ObjectStore) -> None:
    assert list(store.list("nothing/here/")) == []


class _SpyBody:
    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.reads = 0
        self.closed = False

    def read(self, *args: Any) -> bytes:
        self.reads += 1
        return self.inner.read(*args)

    def close(self) -> None:
        self.closed = True
        self.inner.close()


class _SpyClient:
    """Wraps a boto3 client so the test can see what happens to each response body."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.bodies: list[_SpyBody] = []

    def get_object(self, **kwargs: Any) -> Any:
        resp = self.inner.get_object(**kwargs)
        resp["Body"] = _SpyBody(resp["Body"])
        self.bodies.append(resp["Body"])
        return resp


def test_get_refuses_an_oversize_object_before_reading_it(client: Any, store: ObjectStore) -> None:
    store.put("incoming/big.jpg", b"\xff" * 100)
    spy = _SpyClient(client)
    with pytest.raises(ImageTooLargeError) as info:
        ObjectStore(spy, store.bucket).get("incoming/big.jpg", max_bytes=99)
    assert info.value.context == {"bucket": store.bucket, "key": "incoming/big.jpg", "size": 100}
    assert "100 bytes" in str(info.value) and "99-byte limit" in str(info.value)
    assert_sentence(info.value)
    [body] = spy.bodies
    assert body.reads == 0 and body.closed
    # At the limit it is read normally.
    data = ObjectStore(spy, store.bucket).get("incoming/big.jpg", max_bytes=100)
    assert data.body == b"\xff" * 100 and data.size == 100


def test_put_get_head_and_json_round_trip(store: ObjectStore) -> None:
    etag = store.put("results/a.bin", b"hello", content_type="application/octet-stream", metadata={"camera": "7"})
    data = store.get("results/a.bin")
    assert (data.key, data.body, data.size, data.etag) == ("results/a.bin", b"hello", 5, etag)
    assert '"' not in etag
    assert store.head("results/a.bin") == ObjectInfo("results/a.bin", etag, 5)
    meta = store.client.head_object(Bucket=store.bucket, Key="results/a.bin")
    assert meta["Metadata"] == {"camera": "7"}
    store.put_json("results/a.json", {"label": "вагон", "score": 0.5})
    assert store.get_json("results/a.json") == {"label": "вагон", "score": 0.5}
    assert store.client.head_object(Bucket=store.bucket, Key="results/a.json")["ContentType"] == "application/json"


# -- clips: streamed to and from files --------------------------------------------------------


class _ChunkCountingBody(_SpyBody):
    def __init__(self, inner: Any) -> None:
        super().__init__(inner)
        self.chunks: list[int] = []

    def iter_chunks(self, chunk_size: int) -> Iterator[bytes]:
        for chunk in self.inner.iter_chunks(chunk_size):
            self.chunks.append(len(chunk))
            yield chunk


class _ChunkSpyClient(_SpyClient):
    def get_object(self, **kwargs: Any) -> Any:
        resp = self.inner.get_object(**kwargs)
        resp["Body"] = _ChunkCountingBody(resp["Body"])
        self.bodies.append(resp["Body"])
        return resp


def test_download_streams_the_object_to_a_file_in_chunks(client: Any, store: ObjectStore, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import shared.storage

    data = bytes(range(256)) * 1000  # 256,000 bytes
    etag = store.put("incoming/clip.mp4", data, content_type="video/mp4")
    monkeypatch.setattr(shared.storage, "DOWNLOAD_CHUNK", 64 * 1024)
    spy = _ChunkSpyClient(client)
    info = ObjectStore(spy, store.bucket).download("incoming/clip.mp4", tmp_path / "clip", max_bytes=len(data))
    assert info == ObjectInfo("incoming/clip.mp4", etag, len(data))
    assert (tmp_path / "clip").read_bytes() == data
    [body] = spy.bodies
    assert isinstance(body, _ChunkCountingBody)
    assert body.chunks == [65536, 65536, 65536, 59392] and body.closed  # never the whole body at once


def test_download_refuses_an_oversize_clip_before_reading_it(client: Any, store: ObjectStore,
                                                            tmp_path: Path) -> None:
    store.put("incoming/big.mp4", b"\0" * 100)
    spy = _ChunkSpyClient(client)
    with pytest.raises(VideoTooLargeError) as info:
        ObjectStore(spy, store.bucket).download("incoming/big.mp4", tmp_path / "clip", max_bytes=99)
    assert info.value.context == {"bucket": store.bucket, "key": "incoming/big.mp4", "size": 100}
    assert "99-byte limit" in str(info.value) and "MAX_VIDEO_BYTES" in str(info.value)
    assert_sentence(info.value)
    [body] = spy.bodies
    assert isinstance(body, _ChunkCountingBody)
    assert body.reads == 0 and body.chunks == [] and body.closed
    assert not (tmp_path / "clip").exists()


def test_download_of_a_missing_key_is_translated(store: ObjectStore, tmp_path: Path) -> None:
    with pytest.raises(ObjectNotFoundError):
        store.download("incoming/gone.mp4", tmp_path / "clip", max_bytes=1000)


class _BrokenStream:
    """A body whose connection drops after the first chunk."""

    def __init__(self) -> None:
        self.closed = False

    def iter_chunks(self, chunk_size: int) -> Iterator[bytes]:
        yield b"x" * 10
        raise bce.IncompleteReadError(actual_bytes=10, expected_bytes=100)

    def close(self) -> None:
        self.closed = True


def test_a_body_cut_short_during_download_is_transient(store: ObjectStore, tmp_path: Path) -> None:
    body = _BrokenStream()

    class Client:
        def get_object(self, **kwargs: Any) -> Any:
            return {"ContentLength": 100, "ETag": '"abc"', "Body": body}

    with pytest.raises(TransientStorageError) as info:
        ObjectStore(Client(), store.bucket).download("incoming/clip.mp4", tmp_path / "clip", max_bytes=1000)
    assert info.value.retryable and "incoming/clip.mp4" in str(info.value)
    assert body.closed


def test_put_file_uploads_from_disk_with_type_and_metadata(store: ObjectStore, tmp_path: Path) -> None:
    path = tmp_path / "annotated.mp4"
    path.write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(5000))
    etag = store.put_file("results/clip.mp4.annotated.mp4", path, content_type="video/mp4",
                          metadata={"source-etag": "abc"})
    head = store.client.head_object(Bucket=store.bucket, Key="results/clip.mp4.annotated.mp4")
    assert head["ContentType"] == "video/mp4" and head["Metadata"] == {"source-etag": "abc"}
    assert head["ETag"].strip('"') == etag
    assert store.get("results/clip.mp4.annotated.mp4").body == path.read_bytes()


@pytest.mark.parametrize("exc", [
    bce.HTTPClientError(error="Connection reset by peer"),
    bce.SSLError(endpoint_url="https://s3.example", error="EOF"),
    bce.ProxyConnectionError(proxy_url="http://proxy", error="refused"),
])
def test_network_faults_mid_request_are_transient(exc: Exception) -> None:
    # Reported as bad input, such a fault would write an error result and lose the frame.
    err = translate(exc, bucket="b", key="incoming/x.jpg")
    assert isinstance(err, TransientStorageError) and err.retryable


def test_invalid_endpoint_is_a_config_error() -> None:
    from shared.errors import ConfigError

    with pytest.raises(ConfigError, match="not valid"):
        make_client(S3Settings("localhost:9", "us-east-1"))
