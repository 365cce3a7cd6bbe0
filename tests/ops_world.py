"""A bucket as the function leaves it, for the ops tests: results written by the real handler
(tiny bundle) for ok frames, a low-confidence frame, a bad file, a clip, a key with markup in
it, a frame that never got a result and one re-uploaded after its result was written."""

from __future__ import annotations

import dataclasses
import io
import time
from pathlib import Path
from typing import Any

from PIL import Image

from functions import classify
from shared.config import DecodeLimits, FunctionSettings, S3Settings, VideoLimits
from shared.storage import ObjectStore
from tests.fakes import build_tiny_bundle, publish_bundle, s3_event

RED, BLUE, GREYISH_RED = (220, 30, 30), (30, 30, 220), (90, 64, 64)  # car, bus, and a near-threshold frame
OK_FRAMES = {
    "incoming/cam1/0001.jpg": RED,
    "incoming/cam1/0002.jpg": BLUE,
    "incoming/cam2/0001.jpg": RED,
    "incoming/cam2/0002.jpg": GREYISH_RED,
    "incoming/cam1/<script>window.__xss=1</script>.jpg": BLUE,
}
BAD = "incoming/cam2/broken.jpg"
CLIP = "incoming/cam3/clip.mp4"
LOST = "incoming/cam1/lost.jpg"
REUPLOADED = "incoming/cam2/again.jpg"


def jpeg(colour: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


@dataclasses.dataclass
class World:
    bucket: str
    endpoint: str
    store: ObjectStore
    version: str

    def argv(self, *args: str, cache: Path | None = None) -> list[str]:
        extra = ["--cache-dir", str(cache)] if cache else ["--no-cache"]
        return [*args, "--bucket", self.bucket, "--endpoint-url", self.endpoint, "--region", "us-east-1", *extra]


def build_world(client: Any, bucket: str, s3: S3Settings, tmp: Path) -> World:
    from tests import video_fakes as vf

    client.create_bucket(Bucket=bucket)
    store = ObjectStore(client, bucket)
    build_tiny_bundle(tmp / "bundle")
    version = publish_bundle(store, tmp / "bundle")
    settings = FunctionSettings(model_cache_dir=str(tmp / "model-cache"), s3=s3, max_workers=4,
                                limits=DecodeLimits(max_bytes=200_000, max_pixels=1_000_000),
                                video=VideoLimits(max_bytes=2_000_000, max_duration_s=30.0))
    app = classify.App(settings, stores=lambda b: ObjectStore(client, b))
    frames = {**OK_FRAMES, REUPLOADED: RED}
    for key, colour in frames.items():
        store.put(key, jpeg(colour), content_type="image/jpeg")
    store.put(BAD, b"this is not a JPEG", content_type="image/jpeg")
    clip = vf.write_clip(tmp / "clip.mp4", vf.labels_switching(seconds=2.0))
    store.put(CLIP, clip.read_bytes(), content_type="video/mp4")
    app.handle(s3_event(bucket, [*frames, BAD]))
    app.handle(s3_event(bucket, [CLIP]))
    time.sleep(1.1)  # S3 times have one-second resolution: the re-upload must be visibly newer
    store.put(REUPLOADED, jpeg(BLUE), content_type="image/jpeg")
    store.put(LOST, jpeg(RED), content_type="image/jpeg")
    return World(bucket, s3.endpoint_url or "", store, version)
