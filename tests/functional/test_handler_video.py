"""The cloud function's handler with clips: a real (moto) S3 server, the real tiny bundle,
real clips written with PyAV, real decoding and H.264 encoding."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from functions import classify
from functions.classify import make_handler
from shared.config import DecodeLimits, FunctionSettings, S3Settings, VideoLimits
from shared.errors import TransientStorageError
from shared.runtime import Classifier
from shared.storage import ObjectInfo, ObjectStore
from tests import video_fakes as vf
from tests.fakes import s3_event, sqs_event, yandex_event
from tests.functional.test_handler import RED, all_keys, frame
from tests.result_schema import assert_valid_result

CLIP = "incoming/cam 1/Gate+2 ночь.MP4"
CLIP_JSON = "results/cam 1/Gate+2 ночь.MP4.json"
CLIP_MP4 = "results/cam 1/Gate+2 ночь.MP4.annotated.mp4"


class FlakyDownloads(ObjectStore):
    """Downloads of some keys fail as an S3 outage would, after botocore's retries."""

    def __init__(self, client: Any, bucket: str, flaky: set[str]) -> None:
        super().__init__(client, bucket)
        self.flaky = flaky

    def download(self, key: str, path: Path, **kwargs: Any) -> ObjectInfo:
        if key in self.flaky:
            raise TransientStorageError(f"The object store failed on s3://{self.bucket}/{key} (503) after "
                                        "retries; retry later.", bucket=self.bucket, key=key)
        return super().download(key, path, **kwargs)


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("handler-clips")
    vf.write_clip(folder / "switch.mp4", vf.labels_switching(seconds=3.0))  # 30 frames: 15 bus, 15 car
    vf.cut_after_index(folder / "switch.mp4", folder / "cut.mp4")
    vf.text_as_mp4(folder / "text.mp4")
    vf.audio_only(folder / "voice.mp4")
    return folder


@pytest.fixture()
def settings(tmp_path: Path, s3_settings: S3Settings) -> FunctionSettings:
    return FunctionSettings(model_cache_dir=str(tmp_path / "cache"), s3=s3_settings, max_workers=4,
                            limits=DecodeLimits(max_bytes=200_000, max_pixels=1_000_000),
                            video=VideoLimits(max_bytes=2_000_000, max_duration_s=30.0))


def upload(store: ObjectStore, key: str, path: Path) -> str:
    return store.put(key, path.read_bytes(), content_type="video/mp4")


def decode(data: bytes) -> dict[str, Any]:
    import av

    with av.open(io.BytesIO(data), "r") as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        assert stream.average_rate is not None
        return {"codec": stream.codec_context.name, "size": (stream.width, stream.height), "frames": frames,
                "fps": float(stream.average_rate)}


def results(store: ObjectStore) -> list[str]:
    return [k for k in all_keys(store) if k.startswith("results/")]


# -- the happy path -------------------------------------------------------------------------


def test_clip_gives_a_json_result_and_an_annotated_mp4(app: classify.App, store: ObjectStore, s3_client: Any,
                                                       clips: Path, caplog: pytest.LogCaptureFixture) -> None:
    etag = upload(store, CLIP, clips / "switch.mp4")
    caplog.set_level(logging.INFO, logger="functions")
    response = app.handle(s3_event(store.bucket, [CLIP], etags=[etag]), None)

    assert response["records"]["ok"] == 1
    doc = store.get_json(CLIP_JSON)
    assert (doc["status"], doc["kind"], doc["error"], doc["annotated_key"]) == ("ok", "video", None, CLIP_MP4)
    assert doc["source"] == {"bucket": store.bucket, "key": CLIP, "etag": etag,
                             "size": (clips / "switch.mp4").stat().st_size, "version_id": None}
    assert doc["model"]["version"] == "tiny-v1" and doc["model"]["backbone"] == "tiny_mean_rgb"
    assert doc["processed_at"] == "2024-06-01T10:00:00.000Z" and doc["schema_version"] == 1
    assert set(doc["timings_ms"]) == {"download", "process", "upload", "decode", "inference", "encode"}
    assert all(isinstance(ms, float) and ms >= 0 for ms in doc["timings_ms"].values())
    assert doc["throughput"]["frames_per_s"] > 0
    assert doc["video"]["frames_decoded"] == 30 and (doc["video"]["width"], doc["video"]["height"]) == (160, 120)
    assert doc["summary"]["label_share"] == {"bus": 0.5, "car": 0.5} and doc["partial"] is None
    assert [r["label"] for r in doc["frames"]] == ["bus"] * 15 + ["car"] * 15
    assert_valid_result(doc)

    head = s3_client.head_object(Bucket=store.bucket, Key=CLIP_MP4)
    assert head["ContentType"] == "video/mp4"
    assert head["Metadata"] == {"source-etag": etag, "model-version": "tiny-v1"}
    annotated = decode(store.get(CLIP_MP4).body)
    assert annotated["codec"] == "h264" and annotated["size"] == (160, 120) and annotated["fps"] == 10.0
    assert len(annotated["frames"]) == 30 == doc["annotated"]["frames"]
    assert not np.array_equal(annotated["frames"][0][:20, :40], annotated["frames"][0][-20:, -40:])  # a badge
    assert results(store) == sorted([CLIP_JSON, CLIP_MP4])  # nothing else written, nothing under incoming/

    [line] = [json.loads(r.getMessage()) for r in caplog.records
              if r.name == "functions.classify" and CLIP in r.getMessage()]
    assert line["status"] == "ok" and line["kind"] == "video" and line["annotated_key"] == CLIP_MP4
    assert line["frames"] == 30 and line["frames_per_s"] > 0 and line["label"] in ("bus", "car")
    assert line["label_share"] == 0.5 and line["partial"] is False


def test_frames_and_clips_in_one_sqs_batch(app: classify.App, store: ObjectStore, clips: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    keys = ["incoming/a.jpg", "incoming/clip.avi", "incoming/b.jpg", "incoming/bad.mkv"]
    store.put("incoming/a.jpg", frame(RED))
    store.put("incoming/b.jpg", frame((30, 30, 220)))
    vf.write_clip(clips / "bus.avi", ["bus"] * 12)
    upload(store, "incoming/clip.avi", clips / "bus.avi")
    upload(store, "incoming/bad.mkv", clips / "text.mp4")
    calls: list[tuple[int, int | None]] = []
    real = Classifier.predict

    def spy(self: Classifier, images: np.ndarray, **kw: Any) -> Any:
        calls.append((len(images), kw.get("top_k")))
        return real(self, images, **kw)

    monkeypatch.setattr(Classifier, "predict", spy)
    assert app.handle(sqs_event(store.bucket, keys), None) == {"batchItemFailures": []}

    assert calls[0] == (2, None)  # the two frames: one batch, before the clips
    assert all(top_k == 5 for _, top_k in calls[1:])  # then the clip's own batches
    assert store.get_json("results/a.jpg.json")["label"] == "car"
    assert store.get_json("results/b.jpg.json")["label"] == "bus"
    assert store.get_json("results/clip.avi.json")["summary"]["label_share"]["bus"] == 1.0
    bad = store.get_json("results/bad.mkv.json")
    assert bad["status"] == "error" and bad["error"]["type"] == "NotAVideoError"
    assert len(decode(store.get("results/clip.avi.annotated.mp4").body)["frames"]) == 12


# -- bad clips --------------------------------------------------------------------------------


def test_every_bad_clip_gets_an_error_result_and_no_annotated_mp4(app: classify.App, store: ObjectStore,
                                                                  clips: Path) -> None:
    inputs = {"incoming/text.mp4": clips / "text.mp4", "incoming/voice.mp4": clips / "voice.mp4",
              "incoming/cut.mp4": clips / "cut.mp4", "incoming/empty.mov": None}
    for key, path in inputs.items():
        store.put(key, path.read_bytes() if path else b"")
    big = bytes(2_000_001)  # over the 2 MB test limit
    store.put("incoming/big.mp4", big)
    expected = {"text.mp4": "NotAVideoError", "voice.mp4": "NoVideoStreamError", "cut.mp4": "EmptyVideoError",
                "empty.mov": "NotAVideoError", "big.mp4": "VideoTooLargeError", "deleted.mp4": "ObjectNotFoundError"}

    response = app.handle(s3_event(store.bucket, [*inputs, "incoming/big.mp4", "incoming/deleted.mp4"]), None)

    assert response["records"] == {"ok": 0, "error": 6, "skipped": 0, "ignored": 0, "failed": 0}
    for name, kind in expected.items():
        doc = store.get_json(f"results/{name}.json")
        assert (doc["status"], doc["kind"], doc["error"]["type"]) == ("error", "video", kind), name
        assert f"incoming/{name}" in doc["error"]["message"] and doc["error"]["message"].endswith(".")
        assert doc["annotated_key"] is None and doc["summary"] is None and doc["model"]["version"] == "tiny-v1"
        assert_valid_result(doc)
    assert store.get_json("results/big.mp4.json")["source"]["size"] == len(big)
    assert not [k for k in results(store) if k.endswith(".mp4")]


# -- idempotency and faults ------------------------------------------------------------------


def test_a_partly_readable_clip_gets_an_ok_result_saying_where_it_stopped(app: classify.App, store: ObjectStore,
                                                                        tmp_path: Path) -> None:
    whole = vf.write_clip(tmp_path / "long.mkv", vf.labels_switching(6.0), size=(320, 240))
    upload(store, "incoming/cut.mkv", vf.truncate(whole, tmp_path / "cut.mkv", 0.5))
    response = app.handle(s3_event(store.bucket, ["incoming/cut.mkv"]), None)
    assert response["records"]["ok"] == 1
    doc = store.get_json("results/cut.mkv.json")
    assert doc["status"] == "ok" and "cut short" in doc["partial"]["reason"]
    assert doc["video"]["frames_decoded"] == doc["partial"]["stopped_at_frame"] == len(doc["frames"])
    assert_valid_result(doc)


@pytest.mark.parametrize("make_event", [
    lambda bucket, etag: s3_event(bucket, [CLIP], etags=[etag]),
    lambda bucket, etag: yandex_event(bucket, [CLIP]),
], ids=["s3-with-etag", "yandex-without-etag"])
def test_duplicate_delivery_is_skipped(app: classify.App, store: ObjectStore, s3_client: Any, clips: Path,
                                       make_event: Any) -> None:
    etag = upload(store, CLIP, clips / "switch.mp4")
    event = make_event(store.bucket, etag)
    app.handle(event, None)
    first = {k: s3_client.head_object(Bucket=store.bucket, Key=k) for k in (CLIP_JSON, CLIP_MP4)}

    response = app.handle(json.loads(json.dumps(event)), None)

    assert response["records"]["skipped"] == 1
    for key, head in first.items():
        again = s3_client.head_object(Bucket=store.bucket, Key=key)
        assert (again["ETag"], again["LastModified"]) == (head["ETag"], head["LastModified"])


def test_a_bad_clip_delivered_again_is_skipped(app: classify.App, store: ObjectStore, clips: Path) -> None:
    upload(store, "incoming/text.mp4", clips / "text.mp4")
    event = s3_event(store.bucket, ["incoming/text.mp4"])
    assert app.handle(event, None)["records"]["error"] == 1
    assert app.handle(event, None)["records"]["skipped"] == 1


def test_transient_download_fault_names_only_that_message(settings: FunctionSettings, s3_client: Any,
                                                          store: ObjectStore, model: str, clips: Path) -> None:
    keys = ["incoming/a.mp4", "incoming/b.mp4", "incoming/c.jpg"]
    upload(store, "incoming/a.mp4", clips / "switch.mp4")
    upload(store, "incoming/b.mp4", clips / "switch.mp4")
    store.put("incoming/c.jpg", frame(RED))
    flaky = make_handler(settings, stores=lambda b: FlakyDownloads(s3_client, b, {"incoming/b.mp4"}))
    event = sqs_event(store.bucket, keys)

    assert flaky(event, None) == {"batchItemFailures": [{"itemIdentifier": "msg-0001"}]}
    assert store.head("results/b.mp4.json") is None and store.head("results/b.mp4.annotated.mp4") is None
    assert store.get_json("results/a.mp4.json")["status"] == "ok"
    assert store.get_json("results/c.jpg.json")["status"] == "ok"

    healthy = make_handler(settings, stores=lambda b: ObjectStore(s3_client, b))
    assert healthy(event, None) == {"batchItemFailures": []}
    assert store.get_json("results/b.mp4.json")["status"] == "ok"


def test_a_damaged_bundle_is_retried_for_clips_and_frames_never_reported_as_theirs(
        settings: FunctionSettings, s3_client: Any, store: ObjectStore, model: str, clips: Path) -> None:
    # The model files load on a thread while the records are fetched; their failure must send
    # every record back for a retry, not become an error result that blames the clip or frame.
    upload(store, "incoming/a.mp4", clips / "switch.mp4")
    store.put("incoming/c.jpg", frame(RED))
    head = store.get("models/tiny-v1/head.onnx").body
    store.put("models/tiny-v1/head.onnx", head + b"\0")
    handler = make_handler(settings, stores=lambda b: ObjectStore(s3_client, b))
    event = sqs_event(store.bucket, ["incoming/a.mp4", "incoming/c.jpg"])

    assert handler(event, None) == {"batchItemFailures": [{"itemIdentifier": "msg-0000"},
                                                          {"itemIdentifier": "msg-0001"}]}
    assert not [o.key for o in store.list("results/")]

    store.put("models/tiny-v1/head.onnx", head)  # restored: the redelivery is classified
    assert handler(event, None) == {"batchItemFailures": []}
    assert store.get_json("results/a.mp4.json")["status"] == "ok"
    assert store.get_json("results/c.jpg.json")["status"] == "ok"


def test_transient_fault_on_a_clip_is_raised_for_direct_invocations(settings: FunctionSettings, s3_client: Any,
                                                                    store: ObjectStore, model: str,
                                                                    clips: Path) -> None:
    upload(store, CLIP, clips / "switch.mp4")
    handler = make_handler(settings, stores=lambda b: FlakyDownloads(s3_client, b, {CLIP}))
    with pytest.raises(TransientStorageError) as info:
        handler(s3_event(store.bucket, [CLIP]), None)
    assert info.value.retryable and results(store) == []
