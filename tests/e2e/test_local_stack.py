"""End to end through the local stack: moto S3 -> bucket notification -> SQS -> worker -> real handler.

The bundle is the tiny ONNX fake (no TensorFlow): red frames are ``car``, grey ones ``bus``.
"""

from __future__ import annotations

import io
import json
import struct
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from functions.local import BUCKET, LocalStack
from shared.config import DecodeLimits
from shared.errors import TransientStorageError
from shared.storage import ObjectStore
from tests.fakes import build_tiny_bundle


def jpeg(colour: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def png_bomb(width: int = 60_000, height: int = 60_000) -> bytes:
    """A valid PNG header declaring a huge canvas (a decompression bomb's calling card)."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    return bytes(data)


def s3_notification(key: str, etag: str | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {"key": key, "size": 1}
    if etag:
        obj["eTag"] = etag
    return {"Records": [{"eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
                         "eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": BUCKET}, "object": obj}}]}


def start_stack(tmp_path: Path, **kwargs: Any) -> LocalStack:
    bundle_dir = tmp_path / "bundle"
    build_tiny_bundle(bundle_dir)
    stack = LocalStack(bundle_dir=bundle_dir, visibility_timeout=2, model_cache_dir=tmp_path / "cache", **kwargs)
    stack.__enter__()
    stack.ensure_model(quiet=True)
    stack.start_worker()
    return stack


@pytest.fixture()
def stack(tmp_path: Path) -> Iterator[LocalStack]:
    s = start_stack(tmp_path, limits=DecodeLimits(max_bytes=200_000, max_pixels=20_000_000))
    yield s
    s.__exit__(None, None, None)


def queue_depth(stack: LocalStack) -> int:
    attrs = stack.sqs.get_queue_attributes(QueueUrl=stack.queue_url, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


def test_n_frames_give_n_results(stack: LocalStack) -> None:
    keys = [f"incoming/cam{i % 3}/frame {i:03d}+ü.jpg" for i in range(12)]
    for i, key in enumerate(keys):
        stack.store.put(key, jpeg((220, 20, 20) if i % 2 else (128, 128, 128)))
    found = stack.wait_for_results(keys, timeout=60)
    assert len(found) == 12
    labels = [found[k]["label"] for k in keys]
    assert labels == ["bus", "car"] * 6
    assert all(found[k]["status"] == "ok" and found[k]["source"]["key"] == k for k in keys)
    results = [o.key for o in stack.store.list("results/")]
    assert len(results) == 12 and not stack.worker_errors


def test_every_bad_input_kind_gets_an_error_result(stack: LocalStack) -> None:
    bad = {
        "incoming/too-large.jpg": jpeg((10, 200, 10), size=(1200, 900)) + b"\0" * 200_000,
        "incoming/not-an-image.jpg": b"%PDF-1.4 definitely not a frame",
        "incoming/truncated.jpg": jpeg((50, 60, 70), size=(320, 240))[:900],
        "incoming/bomb.png": png_bomb(),
        "incoming/empty.jpg": b"",
    }
    for key, data in bad.items():
        stack.store.put(key, data)
    # Deleted before read: the notification arrives after the object is gone. (Sent by hand,
    # so the worker cannot win the race against the delete.)
    stack.sqs.send_message(QueueUrl=stack.queue_url, MessageBody=json.dumps(s3_notification("incoming/deleted.jpg")))
    keys = [*bad, "incoming/deleted.jpg"]
    found = stack.wait_for_results(keys, timeout=60)
    kinds = {k: found[k]["error"]["type"] for k in keys if k in found}
    assert kinds == {
        "incoming/too-large.jpg": "ImageTooLargeError",
        "incoming/not-an-image.jpg": "NotAnImageError",
        "incoming/truncated.jpg": "TruncatedImageError",
        "incoming/bomb.png": "DecompressionBombError",
        "incoming/empty.jpg": "NotAnImageError",
        "incoming/deleted.jpg": "ObjectNotFoundError",
    }
    for key in keys:
        assert found[key]["status"] == "error" and found[key]["error"]["message"].endswith(".")


def test_writes_under_results_trigger_nothing(stack: LocalStack) -> None:
    stack.store.put("incoming/one.jpg", jpeg((128, 128, 128)))
    assert len(stack.wait_for_results(["incoming/one.jpg"], timeout=30)) == 1
    batches = stack.handled_batches
    stack.store.put("results/planted.jpg", jpeg((220, 20, 20)))
    stack.store.put("models/other.jpg", jpeg((220, 20, 20)))
    time.sleep(3)
    assert queue_depth(stack) == 0
    assert stack.handled_batches == batches
    assert sorted(o.key for o in stack.store.list("results/")) == ["results/one.jpg.json", "results/planted.jpg"]


def test_duplicate_delivery_gives_one_result(stack: LocalStack) -> None:
    stack.store.put("incoming/dup.jpg", jpeg((220, 20, 20)))
    assert len(stack.wait_for_results(["incoming/dup.jpg"], timeout=30)) == 1
    first = stack.s3.head_object(Bucket=BUCKET, Key="results/dup.jpg.json")
    body = stack.store.get("results/dup.jpg.json").body
    etag = first["ETag"].strip('"')
    event = s3_notification("incoming/dup.jpg", etag=stack.store.head("incoming/dup.jpg").etag)
    for _ in range(2):  # SQS is at-least-once: deliver the same notification twice more
        stack.sqs.send_message(QueueUrl=stack.queue_url, MessageBody=json.dumps(event))
    deadline = time.monotonic() + 20
    while queue_depth(stack) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert queue_depth(stack) == 0
    after = stack.s3.head_object(Bucket=BUCKET, Key="results/dup.jpg.json")
    assert after["ETag"].strip('"') == etag and after["LastModified"] == first["LastModified"]
    assert stack.store.get("results/dup.jpg.json").body == body
    assert [o.key for o in stack.store.list("results/")] == ["results/dup.jpg.json"]


class FlakyStore(ObjectStore):
    """The real store, but the first ``failures`` result writes fail as S3 503s would after retries."""

    def __init__(self, client: Any, bucket: str, budget: dict[str, int]) -> None:
        super().__init__(client, bucket)
        self.budget = budget

    def put(self, key: str, body: bytes, **kwargs: Any) -> str:
        if key.startswith("results/") and self.budget["failures"] > 0:
            self.budget["failures"] -= 1
            raise TransientStorageError(f"Injected 503 on s3://{self.bucket}/{key}.", bucket=self.bucket, key=key)
        return super().put(key, body, **kwargs)


def test_injected_s3_fault_ends_with_every_result_after_redelivery(tmp_path: Path) -> None:
    budget = {"failures": 4}
    stack = start_stack(tmp_path, store_factory=lambda client: (lambda b: FlakyStore(client, b, budget)))
    try:
        keys = [f"incoming/flaky/{i:02d}.jpg" for i in range(8)]
        for i, key in enumerate(keys):
            stack.store.put(key, jpeg((220, 20, 20) if i % 2 else (90, 90, 90)))
        found = stack.wait_for_results(keys, timeout=90)
        assert budget["failures"] == 0  # the faults really happened
        assert len(found) == 8 and all(r["status"] == "ok" for r in found.values())
        deadline = time.monotonic() + 20
        while queue_depth(stack) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert queue_depth(stack) == 0
        dlq = stack.sqs.get_queue_attributes(QueueUrl=stack.dlq_url, AttributeNames=["ApproximateNumberOfMessages"])
        assert dlq["Attributes"]["ApproximateNumberOfMessages"] == "0"
    finally:
        stack.__exit__(None, None, None)
