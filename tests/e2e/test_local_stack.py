"""End to end through the local stack: moto S3 -> bucket notification -> SQS -> worker -> real handler.

The bundle is the tiny ONNX fake (no TensorFlow): red frames are ``car``, grey ones ``bus``.
Clips go through the same stack and the same handler: generated ones from
tests/video_fakes.py, and one real CCTV clip of the kit when it is present.
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

from devstack.stack import BUCKET, LocalStack
from shared.config import DecodeLimits, VideoLimits
from shared.errors import TransientStorageError
from shared.storage import ObjectStore
from tests import video_fakes as vf
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


def start_stack(tmp_path: Path, *, visibility_timeout: int = 2, **kwargs: Any) -> LocalStack:
    bundle_dir = tmp_path / "bundle"
    build_tiny_bundle(bundle_dir)
    stack = LocalStack(bundle_dir=bundle_dir, visibility_timeout=visibility_timeout,
                       model_cache_dir=tmp_path / "cache", **kwargs)
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
    source = stack.store.head("incoming/dup.jpg")
    assert source is not None
    event = s3_notification("incoming/dup.jpg", etag=source.etag)
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


# -- clips ------------------------------------------------------------------------------------

KIT_CLIP = ("yashbansal24_video.avi", (320, 240), 750)  # the kit's shortest clip to process


@pytest.fixture()
def clip_stack(tmp_path: Path) -> Iterator[LocalStack]:
    # A clip takes seconds, not milliseconds: a visibility timeout well above that, as on AWS.
    s = start_stack(tmp_path, visibility_timeout=60, video_limits=VideoLimits(max_bytes=20_000_000,
                                                                              max_duration_s=60.0))
    yield s
    s.__exit__(None, None, None)


def decode_mp4(data: bytes) -> tuple[tuple[int, int], int, str]:
    import av

    with av.open(io.BytesIO(data), "r") as container:
        stream = container.streams.video[0]
        return (stream.width, stream.height), sum(1 for _ in container.decode(stream)), stream.codec_context.name


def settle(stack: LocalStack, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while queue_depth(stack) and time.monotonic() < deadline:
        time.sleep(0.2)


def test_clip_gives_json_and_annotated_mp4_and_they_trigger_nothing(clip_stack: LocalStack,
                                                                   tmp_path: Path) -> None:
    stack = clip_stack
    clip = vf.write_clip(tmp_path / "clip.mp4", vf.labels_switching(seconds=3.0))  # 30 frames, bus then car
    stack.store.put("incoming/cam3/Gate 1.mp4", clip.read_bytes(), content_type="video/mp4")
    stack.store.put("incoming/cam3/still.jpg", jpeg((220, 20, 20)))
    keys = ["incoming/cam3/Gate 1.mp4", "incoming/cam3/still.jpg"]
    found = stack.wait_for_results(keys, timeout=60)

    doc = found["incoming/cam3/Gate 1.mp4"]
    assert (doc["status"], doc["kind"], doc["annotated_key"]) == (
        "ok", "video", "results/cam3/Gate 1.mp4.annotated.mp4")
    assert doc["summary"]["label_share"] == {"bus": 0.5, "car": 0.5} and doc["video"]["frames_decoded"] == 30
    assert found["incoming/cam3/still.jpg"]["label"] == "car"
    size, frames, codec = decode_mp4(stack.store.get(doc["annotated_key"]).body)
    assert (size, frames, codec) == ((160, 120), 30, "h264")
    assert stack.s3.head_object(Bucket=BUCKET, Key=doc["annotated_key"])["ContentType"] == "video/mp4"

    # The annotated mp4 and the JSON were written under results/: neither may reach the queue.
    settle(stack)
    batches = stack.handled_batches
    time.sleep(3)
    assert queue_depth(stack) == 0 and stack.handled_batches == batches and not stack.worker_errors
    assert sorted(o.key for o in stack.store.list("results/")) == [
        "results/cam3/Gate 1.mp4.annotated.mp4", "results/cam3/Gate 1.mp4.json", "results/cam3/still.jpg.json"]


def test_bad_and_repeated_clips_through_the_stack(clip_stack: LocalStack, tmp_path: Path) -> None:
    stack = clip_stack
    stack.store.put("incoming/report.mkv", vf.text_as_mp4(tmp_path / "t.mp4").read_bytes())
    stack.store.put("incoming/ok.avi", vf.write_clip(tmp_path / "ok.avi", ["bus"] * 10).read_bytes())
    found = stack.wait_for_results(["incoming/report.mkv", "incoming/ok.avi"], timeout=60)
    assert found["incoming/report.mkv"]["error"]["type"] == "NotAVideoError"
    assert found["incoming/ok.avi"]["status"] == "ok"
    settle(stack)
    before = {o.key: o.etag for o in stack.store.list("results/")}
    source = stack.store.head("incoming/ok.avi")
    assert source is not None
    event = s3_notification("incoming/ok.avi", etag=source.etag)
    stack.sqs.send_message(QueueUrl=stack.queue_url, MessageBody=json.dumps(event))  # at-least-once
    time.sleep(1)
    settle(stack)
    assert {o.key: o.etag for o in stack.store.list("results/")} == before
    assert "results/report.mkv.annotated.mp4" not in before and not stack.worker_errors


def test_a_real_cctv_clip_end_to_end(kit: Path, tmp_path: Path) -> None:
    name, size, frames = KIT_CLIP
    source = kit / "data" / "video" / name
    if not source.is_file():
        pytest.skip(f"{source} is not in the kit")
    # Classify 5 frames a second (every frame is still decoded and annotated): keeps this well under 30 s.
    stack = start_stack(tmp_path, visibility_timeout=120,
                        video_limits=VideoLimits(max_bytes=50_000_000, max_duration_s=120.0, sample_fps=5.0))
    try:
        key = f"incoming/kit/{name}"
        stack.store.put(key, source.read_bytes(), content_type="video/x-msvideo")
        started = time.monotonic()
        doc = stack.wait_for_results([key], timeout=120)[key]
        elapsed = time.monotonic() - started
        assert doc["status"] == "ok", doc["error"]
        assert doc["video"]["frames_decoded"] == frames and doc["partial"] is None
        assert doc["sampling"]["mode"] == "fps" and 140 <= doc["video"]["frames_sampled"] <= 160
        assert decode_mp4(stack.store.get(doc["annotated_key"]).body) == (size, frames, "h264")
        print(f"\n  {name} through the local stack: {elapsed:.1f} s, {doc['throughput']['frames_per_s']} frames/s")
    finally:
        stack.__exit__(None, None, None)
