"""An in-memory ObjectStore for unit tests: the real interface, no network."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from shared.errors import ObjectNotFoundError, VideoTooLargeError
from shared.storage import ObjectData, ObjectInfo, ObjectStore


class MemoryStore(ObjectStore):
    def __init__(self, bucket: str = "memory") -> None:
        super().__init__(client=None, bucket=bucket)
        self.objects: dict[str, bytes] = {}
        self.content_types: dict[str, str] = {}
        self.gets: list[str] = []
        self.downloads: list[str] = []

    def check_bucket(self) -> None:
        return None

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        for key in sorted(self.objects):
            if key.startswith(prefix):
                yield ObjectInfo(key, self._etag(key), len(self.objects[key]))

    def _etag(self, key: str) -> str:
        return hashlib.md5(self.objects[key]).hexdigest()

    def head(self, key: str) -> ObjectInfo | None:
        return ObjectInfo(key, self._etag(key), len(self.objects[key])) if key in self.objects else None

    def get(self, key: str, *, max_bytes: int | None = None) -> ObjectData:
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
            metadata: dict[str, str] | None = None) -> str:
        self.objects[key] = bytes(body)
        self.content_types[key] = content_type
        return self._etag(key)

    def put_file(self, key: str, path: Path, *, content_type: str = "application/octet-stream",
                 metadata: dict[str, str] | None = None) -> str:
        return self.put(key, Path(path).read_bytes(), content_type=content_type, metadata=metadata)
