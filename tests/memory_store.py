"""An in-memory ObjectStore for unit tests: the real interface, no network.

It behaves as S3 does where moto does not: keys over 1,024 bytes (UTF-8) are refused with
``KeyTooLongError``, and conditional writes (``if_none_match``, ``if_match``) are atomic, so
racing writers can be tested.  ``writes`` counts the successful PUTs of each key.
"""

from __future__ import annotations

import collections
import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from shared.errors import (
    KeyTooLongError,
    ObjectNotFoundError,
    PreconditionFailedError,
    VideoTooLargeError,
)
from shared.storage import MAX_KEY_BYTES, ObjectData, ObjectInfo, ObjectStore


class MemoryStore(ObjectStore):
    def __init__(self, bucket: str = "memory", *, max_key_bytes: int | None = MAX_KEY_BYTES) -> None:
        super().__init__(client=None, bucket=bucket)
        self.objects: dict[str, bytes] = {}
        self.content_types: dict[str, str] = {}
        self.metadata: dict[str, dict[str, str]] = {}
        self.gets: list[str] = []
        self.downloads: list[str] = []
        self.writes: collections.Counter[str] = collections.Counter()
        self.max_key_bytes = max_key_bytes
        self._lock = threading.Lock()

    def _check_key(self, key: str) -> None:
        if self.max_key_bytes is not None and len(key.encode()) > self.max_key_bytes:
            raise KeyTooLongError(f"s3://{self.bucket}/{key} is over S3's {self.max_key_bytes:,}-byte key limit; "
                                  "use a shorter key.", bucket=self.bucket, key=key)

    def check_bucket(self) -> None:
        return None

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        for key in sorted(self.objects):
            if key.startswith(prefix):
                yield ObjectInfo(key, self._etag(key), len(self.objects[key]))

    def _etag(self, key: str) -> str:
        return hashlib.md5(self.objects[key]).hexdigest()

    def head(self, key: str) -> ObjectInfo | None:
        self._check_key(key)
        return ObjectInfo(key, self._etag(key), len(self.objects[key])) if key in self.objects else None

    def get(self, key: str, *, max_bytes: int | None = None) -> ObjectData:
        self._check_key(key)
        self.gets.append(key)
        if key not in self.objects:
            raise ObjectNotFoundError(f"s3://{self.bucket}/{key} does not exist.", bucket=self.bucket, key=key)
        return ObjectData(key, self._etag(key), len(self.objects[key]), self.objects[key])

    def download(self, key: str, path: Path, *, max_bytes: int | None = None, digest: Any = None) -> ObjectInfo:
        self.downloads.append(key)
        data = self.get(key)
        if digest is not None:
            digest.update(data.body)
        if max_bytes is not None and data.size > max_bytes:
            raise VideoTooLargeError(f"s3://{self.bucket}/{key} is too large.", bucket=self.bucket, key=key,
                                     size=data.size)
        Path(path).write_bytes(data.body)
        return ObjectInfo(key, data.etag, data.size)

    def put(self, key: str, body: bytes, *, content_type: str = "application/octet-stream",
            metadata: dict[str, str] | None = None, if_none_match: bool = False, if_match: str | None = None) -> str:
        self._check_key(key)
        with self._lock:  # S3 decides a conditional write atomically
            if if_none_match and key in self.objects:
                raise PreconditionFailedError(f"s3://{self.bucket}/{key} exists (If-None-Match failed).",
                                              bucket=self.bucket, key=key)
            if if_match is not None and (key not in self.objects or self._etag(key) != if_match.strip('"')):
                raise PreconditionFailedError(f"s3://{self.bucket}/{key} changed (If-Match failed).",
                                              bucket=self.bucket, key=key)
            self.objects[key] = bytes(body)
            self.content_types[key] = content_type
            self.metadata[key] = dict(metadata or {})
            self.writes[key] += 1
            return self._etag(key)

    def put_file(self, key: str, path: Path, *, content_type: str = "application/octet-stream",
                 metadata: dict[str, str] | None = None, if_none_match: bool = False,
                 if_match: str | None = None) -> str:
        return self.put(key, Path(path).read_bytes(), content_type=content_type, metadata=metadata,
                        if_none_match=if_none_match, if_match=if_match)
