"""An in-memory ObjectStore for unit tests: the real interface, no network."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

from shared.errors import ObjectNotFoundError
from shared.storage import ObjectData, ObjectInfo, ObjectStore


class MemoryStore(ObjectStore):
    def __init__(self, bucket: str = "memory") -> None:
        super().__init__(client=None, bucket=bucket)
        self.objects: dict[str, bytes] = {}
        self.gets: list[str] = []

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

    def put(self, key: str, body: bytes, *, content_type: str = "application/octet-stream",
            metadata: dict[str, str] | None = None) -> str:
        self.objects[key] = bytes(body)
        return self._etag(key)
