"""The function alone, with S3 taken out: the real handler on an in-memory store (benchmark 3).

``make_handler`` with the shipped ``ClassifyService`` (or the pipelined prototype), a
classifier built under an ORT variant, and an in-memory ``ObjectStore``; S3-notification
events of 10 frames each (what the SQS batch gives).  The frames/s and CPU ms per frame
here are what the function itself costs, with moto's share of the two cores gone: the
variants' ratios are cleaner here than through the local stack.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

from bench import ortvariants


def _mem_store_class() -> type:
    from shared.errors import ObjectNotFoundError
    from shared.storage import ObjectData, ObjectInfo, ObjectStore

    class MemStore(ObjectStore):
        def __init__(self, bucket: str) -> None:
            super().__init__(client=None, bucket=bucket)
            self.objects: dict[str, tuple[bytes, str]] = {}

        def head(self, key: str) -> ObjectInfo | None:
            if key not in self.objects:
                return None
            body, etag = self.objects[key]
            return ObjectInfo(key, etag, len(body))

        def get(self, key: str, *, max_bytes: int | None = None) -> ObjectData:
            if key not in self.objects:
                raise ObjectNotFoundError(f"{key} does not exist", bucket=self.bucket, key=key)
            body, etag = self.objects[key]
            return ObjectData(key, etag, len(body), body)

        def put(self, key: str, body: bytes, *, content_type: str = "application/octet-stream",
                metadata: dict[str, str] | None = None, if_none_match: bool = False,
                if_match: str | None = None) -> str:
            # Conditions are not checked: one writer per key here (the handler's conditional writes pass).
            etag = hashlib.md5(body).hexdigest()
            self.objects[key] = (bytes(body), etag)
            return etag

    return MemStore


def run(bundle_dir: Path, data: list[bytes], *, ort: str = "baseline", service: str = "shipped",
        batch: int = 10, tag: str = "x") -> dict[str, Any]:
    from functions.classify import make_handler
    from functions.results import result_key_for
    from shared.config import FunctionSettings

    store = _mem_store_class()("mem")
    keys = [f"incoming/{tag}/f{i:05d}.jpg" for i in range(len(data))]
    for key, blob in zip(keys, data, strict=True):
        store.put(key, blob)
    clf = ortvariants.classifier(bundle_dir, ort)
    settings = FunctionSettings(model_bucket="mem")

    def record(key: str) -> dict[str, Any]:
        return {"eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
                "eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "mem"}, "object": {"key": key}}}

    extra: dict[str, Any] = {}
    if service == "pipelined":
        from bench.worker_child import pipelined_service_class

        extra["service"] = pipelined_service_class()
    handler = make_handler(settings, stores=lambda bucket: store, loader=lambda s: clf, **extra)
    handler({"Records": [record(k) for k in keys[:batch]]}, None)  # warm-up (its results are then skipped)
    c0, t0 = time.process_time(), time.perf_counter()
    for i in range(batch, len(keys), batch):
        handler({"Records": [record(k) for k in keys[i:i + batch]]}, None)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    n = len(keys) - batch
    ok = sum(1 for k in keys[batch:] if result_key_for(settings, k) in store.objects)
    return {"frames": n, "results": ok, "fps": round(n / wall, 1), "cpu_ms_per_frame": round(cpu * 1000 / n, 1),
            "wall_ms_per_frame": round(wall * 1000 / n, 2)}
