"""S3 access through boto3, with every failure translated into ``shared.errors``.

The same code talks to AWS, Yandex Object Storage, MinIO and moto: only the
``endpoint_url`` differs.  Retries with backoff are botocore's own ("standard" mode);
what is still failing after them is raised as ``TransientStorageError``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

from shared.config import S3Settings
from shared.errors import (
    AccessDeniedError,
    BucketNotFoundError,
    CCTVError,
    ConfigError,
    CredentialsError,
    ImageTooLargeError,
    KeyTooLongError,
    ObjectNotFoundError,
    PreconditionFailedError,
    StorageError,
    TransientStorageError,
    VideoTooLargeError,
)

_NOT_FOUND_KEY = {"NoSuchKey", "404", "NotFound"}
_TRANSIENT = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "InternalError",
              "ServiceUnavailable", "RequestTimeTooSkewed", "500", "502", "503", "504"}
# Streamed bodies are read in chunks of this size: a 200 MB clip never sits in memory.
DOWNLOAD_CHUNK = 1024 * 1024
# S3's limit on a key, in bytes of its UTF-8 form.
MAX_KEY_BYTES = 1024
# Where a derived key that would be too long goes instead, under its prefix.
LONG_KEY_FOLDER = "_long/"


def make_client(settings: S3Settings, *, max_pool_connections: int = 16, max_attempts: int = 5,
                read_timeout: float = 30.0, parser_factory: Any = None,
                credentials: Mapping[str, str] | None = None) -> Any:
    """Build an S3 client; botocore is imported here so importing this module stays cheap.

    The client comes from a botocore session rather than ``boto3.client``: the same API
    calls, credentials chain and config, minus boto3's injected transfer helpers
    (``upload_file`` and the like, which nothing here uses) and the resource and s3transfer
    imports they need (40-70 ms of a cold start).

    For the tools: ``parser_factory`` replaces the session's ``response_parser_factory``
    (``ops.parsing``'s listing parser); ``credentials`` are botocore's keyword arguments
    (``aws_access_key_id``, ``aws_secret_access_key``, ``aws_session_token``), else the default chain.
    """
    import botocore.session
    from botocore.config import Config

    config = Config(
        retries={"mode": "standard", "max_attempts": max_attempts},
        max_pool_connections=max_pool_connections,
        connect_timeout=5,
        read_timeout=read_timeout,
        # Path-style works for moto, MinIO and Yandex alike; AWS accepts it too.
        s3={"addressing_style": "path"} if settings.endpoint_url else {},
    )
    session = botocore.session.get_session()
    if parser_factory is not None:
        session.register_component("response_parser_factory", parser_factory)
    try:
        return session.create_client("s3", endpoint_url=settings.endpoint_url, region_name=settings.region,
                                     config=config, **(credentials or {}))
    except ValueError as exc:  # botocore's "Invalid endpoint: ..." for a URL without a scheme
        raise ConfigError(f"The S3 endpoint URL {settings.endpoint_url!r} is not valid ({exc}); give a full URL "
                          "such as https://storage.yandexcloud.net or http://127.0.0.1:9000.",
                          endpoint_url=settings.endpoint_url) from None


def derived_key(prefix: str, relative: str, suffix: str, *, source_key: str) -> str:
    """``prefix + relative + suffix``, or a fixed-length fallback when that is over S3's key limit.

    The fallback is ``prefix + "_long/" + sha256(source_key) + suffix``: deterministic, so a
    repeated delivery finds the same key, and 64 hex digits long whatever the source.  An
    input key can be up to 1,024 bytes, and its result key is longer than it, so inputs with
    keys near the limit (1,021-1,024 bytes under the default prefixes) need it; the result
    itself names its source key.
    """
    key = f"{prefix}{relative}{suffix}"
    if len(key.encode()) <= MAX_KEY_BYTES:
        return key
    import hashlib

    return f"{prefix}{LONG_KEY_FOLDER}{hashlib.sha256(source_key.encode()).hexdigest()}{suffix}"


class Digest(Protocol):
    """What :meth:`ObjectStore.download` feeds each chunk to (a ``hashlib`` object)."""

    def update(self, data: bytes, /) -> None: ...


@dataclasses.dataclass(frozen=True)
class ObjectInfo:
    key: str
    etag: str
    size: int


@dataclasses.dataclass(frozen=True)
class ObjectData:
    key: str
    etag: str
    size: int
    body: bytes


def translate(exc: BaseException, *, bucket: str, key: str | None = None) -> StorageError:
    """Map a botocore exception onto the project's error tree."""
    from botocore import exceptions as bce

    where = f"s3://{bucket}/{key}" if key else f"s3://{bucket}"
    if isinstance(exc, (bce.NoCredentialsError, bce.PartialCredentialsError)):
        return CredentialsError(
            f"No AWS credentials were found for {where}; set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) and try again.", bucket=bucket, key=key)
    # ConnectionError covers endpoint, proxy, SSL and connect-timeout faults; HTTPClientError
    # covers resets, closed connections and read timeouts. None of them says the input is bad.
    if isinstance(exc, (bce.ConnectionError, bce.HTTPClientError, bce.IncompleteReadError,
                        bce.ResponseStreamingError)):
        return TransientStorageError(
            f"Could not reach the object store for {where} ({exc}); check the endpoint URL and "
            "network, then retry.", bucket=bucket, key=key)
    if isinstance(exc, bce.ClientError):
        return _translate_client_error(exc, where, bucket, key)
    return StorageError(f"Unexpected storage failure on {where}: {exc}.", bucket=bucket, key=key)


def _translate_client_error(exc: Any, where: str, bucket: str, key: str | None) -> StorageError:
    err = exc.response.get("Error", {})
    code = str(err.get("Code", ""))
    status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    # HeadBucket has no body, so a missing bucket is a bare "404" with no key.
    if code == "NoSuchBucket" or (code in _NOT_FOUND_KEY and key is None):
        return BucketNotFoundError(
            f"Bucket {bucket!r} does not exist; create it or pass the right --bucket.", bucket=bucket)
    if code in _NOT_FOUND_KEY and key is not None:
        return ObjectNotFoundError(
            f"{where} does not exist (it may have been deleted before it was read).", bucket=bucket, key=key)
    if code in {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken"}:
        return CredentialsError(
            f"The credentials were refused for {where} ({code}); refresh them and try again.",
            bucket=bucket, key=key)
    if code in {"PreconditionFailed", "412"}:
        return PreconditionFailedError(
            f"{where} was written by someone else meanwhile ({err.get('Condition') or 'precondition'} failed); "
            "read it again before replacing it.", bucket=bucket, key=key)
    if code == "KeyTooLongError":
        return KeyTooLongError(
            f"{where} is over S3's {MAX_KEY_BYTES:,}-byte key limit; use a shorter key.", bucket=bucket, key=key)
    if code in {"AccessDenied", "403", "AllAccessDisabled"}:
        return AccessDeniedError(
            f"Access to {where} was denied; grant this role the needed s3 permission.", bucket=bucket, key=key)
    # 409 ConditionalRequestConflict: two conditional writes of one key raced; S3 says to retry.
    if code in _TRANSIENT or code == "ConditionalRequestConflict" or status >= 500:
        return TransientStorageError(
            f"The object store failed on {where} ({code or status}) after retries; retry later.",
            bucket=bucket, key=key)
    return StorageError(f"The object store refused a request on {where}: {code} {err.get('Message', '')}.",
                        bucket=bucket, key=key)


class ObjectStore:
    """A bucket, seen through an injected boto3 client."""

    def __init__(self, client: Any, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    def _call(self, key: str | None, fn: Any, **kwargs: Any) -> Any:
        from botocore import exceptions as bce

        try:
            return fn(Bucket=self.bucket, **kwargs)
        except (bce.BotoCoreError, bce.ClientError) as exc:
            raise translate(exc, bucket=self.bucket, key=key) from exc

    def check_bucket(self) -> None:
        self._call(None, self.client.head_bucket)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Every object under ``prefix``, following continuation tokens (no 1,000-key cap)."""
        paginator = self.client.get_paginator("list_objects_v2")
        from botocore import exceptions as bce

        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    yield ObjectInfo(item["Key"], item["ETag"].strip('"'), int(item["Size"]))
        except (bce.BotoCoreError, bce.ClientError) as exc:
            raise translate(exc, bucket=self.bucket, key=None) from exc

    def head(self, key: str) -> ObjectInfo | None:
        try:
            resp = self._call(key, self.client.head_object, Key=key)
        except ObjectNotFoundError:
            return None
        return ObjectInfo(key, resp["ETag"].strip('"'), int(resp["ContentLength"]))

    def get(self, key: str, *, max_bytes: int | None = None) -> ObjectData:
        """Read a whole object; refuse before reading the body if it exceeds ``max_bytes``."""
        resp, size = self._get_within(key, max_bytes, ImageTooLargeError,
                                      "send a smaller frame or raise MAX_IMAGE_BYTES")
        from botocore import exceptions as bce

        try:
            body = resp["Body"].read()
        except (bce.BotoCoreError, bce.ClientError) as exc:
            raise translate(exc, bucket=self.bucket, key=key) from exc
        return ObjectData(key, resp["ETag"].strip('"'), size, body)

    def _get_within(self, key: str, max_bytes: int | None, too_large: type[CCTVError],
                    advice: str) -> tuple[dict[str, Any], int]:
        """GET ``key`` and refuse it, before reading the body, if it exceeds ``max_bytes``."""
        resp = self._call(key, self.client.get_object, Key=key)
        size = int(resp["ContentLength"])
        if max_bytes is not None and size > max_bytes:
            resp["Body"].close()
            raise too_large(f"s3://{self.bucket}/{key} is {size:,} bytes, over the {max_bytes:,}-byte limit; "
                            f"{advice}.", bucket=self.bucket, key=key, size=size)
        return resp, size

    def download(self, key: str, path: Path, *, max_bytes: int | None = None,
                 digest: Digest | None = None) -> ObjectInfo:
        """Stream an object into the file ``path`` in chunks; refuse before reading if it exceeds ``max_bytes``.

        For clips: the caller normally checks the size on a HEAD first; this check catches an
        object replaced by a larger one in between.  ``digest`` (a hashlib object) is fed each
        chunk as it arrives, so checking a large file costs no second read.  The ETag and size
        are the GET's, i.e. those of the bytes written.
        """
        resp, size = self._get_within(key, max_bytes, VideoTooLargeError,
                                      "send a shorter clip or raise MAX_VIDEO_BYTES")
        from botocore import exceptions as bce

        try:
            with open(path, "wb") as out:
                for chunk in resp["Body"].iter_chunks(DOWNLOAD_CHUNK):
                    out.write(chunk)
                    if digest is not None:
                        digest.update(chunk)
        except (bce.BotoCoreError, bce.ClientError) as exc:
            raise translate(exc, bucket=self.bucket, key=key) from exc
        finally:
            resp["Body"].close()
        return ObjectInfo(key, resp["ETag"].strip('"'), size)

    def put_file(self, key: str, path: Path, *, content_type: str = "application/octet-stream",
                 metadata: dict[str, str] | None = None, if_none_match: bool = False,
                 if_match: str | None = None) -> str:
        """Upload the file ``path`` in one PUT, streamed from disk (never read into memory whole).

        ``if_none_match`` and ``if_match`` make it conditional, as :meth:`put`.
        """
        with open(path, "rb") as body:
            return self._put(key, body, content_type, metadata, if_none_match, if_match)

    def put(self, key: str, body: bytes, *, content_type: str = "application/octet-stream",
            metadata: dict[str, str] | None = None, if_none_match: bool = False, if_match: str | None = None) -> str:
        """Write ``key``; return the new ETag.

        ``if_none_match=True`` writes only if the key does not exist yet (``If-None-Match: *``);
        ``if_match=ETAG`` only if it still holds that ETag.  Either way a lost race raises
        ``PreconditionFailedError`` and leaves the object as the other writer left it.
        """
        return self._put(key, body, content_type, metadata, if_none_match, if_match)

    def _put(self, key: str, body: Any, content_type: str, metadata: dict[str, str] | None, if_none_match: bool,
             if_match: str | None) -> str:
        conditions: dict[str, str] = {}
        if if_none_match:
            conditions["IfNoneMatch"] = "*"
        if if_match is not None:
            conditions["IfMatch"] = f'"{if_match.strip(chr(34))}"'
        try:
            resp = self._call(key, self.client.put_object, Key=key, Body=body, ContentType=content_type,
                              Metadata=metadata or {}, **conditions)
        except ObjectNotFoundError as exc:  # If-Match on a key deleted meanwhile: the condition failed too
            raise PreconditionFailedError(
                f"s3://{self.bucket}/{key} was deleted meanwhile (If-Match failed); read it again before "
                "replacing it.", bucket=self.bucket, key=key) from exc
        return str(resp.get("ETag", "")).strip('"')

    def put_json(self, key: str, obj: Any, *, if_none_match: bool = False, if_match: str | None = None) -> str:
        data = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False).encode()
        return self.put(key, data, content_type="application/json", if_none_match=if_none_match, if_match=if_match)

    def get_json(self, key: str) -> Any:
        return json.loads(self.get(key).body)
