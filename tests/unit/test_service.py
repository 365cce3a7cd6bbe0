"""functions.service without S3 or FFmpeg: how records are dispatched between the batched
frame path and the clip path, and what each clip outcome is.

``process_video`` is replaced by a fake that writes a placeholder "annotated mp4", so these
tests pin the service's own behaviour (keys, ordering, errors, idempotency); the real clip
path is exercised in tests/functional/test_handler_video.py and the e2e tests.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import textwrap
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from devstack.samples import jpeg_bytes
from functions import clips
from functions.events import ObjectRef
from functions.service import ClassifyService, Status, annotated_key_for, is_final
from shared.config import FunctionSettings, VideoLimits
from shared.errors import (
    CCTVError,
    EmptyVideoError,
    NotAVideoError,
    TransientStorageError,
    UnsupportedCodecError,
    VideoTooLargeError,
    VideoTooLongError,
    VideoTooManyFramesError,
)
from shared.runtime import Classifier
from tests.fakes import build_tiny_bundle
from tests.memory_store import MemoryStore

CLIP_BYTES = b"\x00\x00\x00\x18ftypisom pretend this is a clip"
RED, BLUE = (220, 30, 30), (30, 30, 220)


def frame(colour: tuple[int, int, int]) -> bytes:
    return jpeg_bytes(Image.new("RGB", (64, 48), colour))


class FakeProcessVideo:
    """Stands in for functions.video.process_video: records its calls, writes a placeholder mp4."""

    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error
        self.calls: list[dict[str, Any]] = []

    def __call__(self, path_in: Path, classifier: Any, *, out_path: Path | None = None,
                 limits: VideoLimits = VideoLimits(), name: str | None = None, **_: Any) -> dict[str, Any]:
        self.calls.append({"name": name, "path_in": path_in, "out_path": out_path, "limits": limits,
                           "bytes": path_in.read_bytes(), "classifier": classifier})
        if self.error is not None:
            raise self.error
        assert out_path is not None
        out_path.write_bytes(b"annotated:" + path_in.read_bytes())
        return {
            "schema_version": 1, "kind": "video",
            "model": {"version": "ignored", "backbone": "ignored", "classes": ["bus", "car"],
                      "positive_class": "car", "threshold": 0.5},
            "video": {"width": 160, "height": 120, "frames_decoded": 30, "frames_sampled": 30},
            "sampling": {"mode": "every_frame"},
            "summary": {"dominant_label": "car", "label_share": {"bus": 0.4, "car": 0.6}},
            "partial": None,
            "annotated": {"codec": "h264", "frames": 30},
            "timings_ms": {"decode": 100.0, "inference": 300.0, "encode": 90.0, "total": 500.0},
            "throughput": {"frames_per_s": 60.0, "sampled_frames_per_s": 60.0},
            "frames": [{"frame": 0, "label": "car"}],
        }


class FlakyDownloads(MemoryStore):
    def download(self, key: str, path: Path, **kwargs: Any) -> Any:
        raise TransientStorageError(f"The object store failed on s3://{self.bucket}/{key} (503) after retries; "
                                    "retry later.", bucket=self.bucket, key=key)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny")
    build_tiny_bundle(folder)
    return folder


@pytest.fixture(scope="module")
def tiny(tiny_dir: Path) -> Classifier:
    return Classifier.from_dir(tiny_dir)


@pytest.fixture()
def fake_video(monkeypatch: pytest.MonkeyPatch) -> FakeProcessVideo:
    fake = FakeProcessVideo()
    monkeypatch.setattr(clips, "process_video", fake)
    return fake


@pytest.fixture()
def store() -> MemoryStore:
    return MemoryStore("frames")


def make_service(store: MemoryStore, tiny: Classifier, **settings: Any) -> ClassifyService:
    return ClassifyService(FunctionSettings(**settings), lambda bucket: store, tiny,
                           lambda: datetime(2024, 6, 1, 10, 0, tzinfo=timezone.utc))


def refs(store: MemoryStore, keys: list[str]) -> list[ObjectRef]:
    return [ObjectRef(store.bucket, key) for key in keys]


# -- keys -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("key", "expected"), [
    ("incoming/cam1/clip.mp4", "results/cam1/clip.mp4.annotated.mp4"),
    ("incoming/Clip.MOV", "results/Clip.MOV.annotated.mp4"),
    ("incoming/a/b/c d+e.mkv", "results/a/b/c d+e.mkv.annotated.mp4"),
    ("other/clip.mp4", None),
    ("incoming/", None),
])
def test_annotated_key_is_always_under_the_results_prefix(key: str, expected: str | None) -> None:
    assert annotated_key_for(FunctionSettings(), key) == expected


def test_annotated_key_follows_custom_prefixes() -> None:
    settings = FunctionSettings(input_prefix="cams/in", results_prefix="cams/out")
    assert annotated_key_for(settings, "cams/in/x.avi") == "cams/out/x.avi.annotated.mp4"


@pytest.mark.parametrize("error", [VideoTooLargeError, VideoTooLongError, NotAVideoError, EmptyVideoError,
                                   UnsupportedCodecError])
def test_errors_in_the_clip_itself_are_final(error: type[CCTVError]) -> None:
    assert is_final({"status": "error", "error": {"type": error.__name__, "message": "."}})


def test_storage_errors_are_not_final() -> None:
    assert not is_final({"status": "error", "error": {"type": "ObjectNotFoundError", "message": "."}})


REPO = Path(__file__).resolve().parents[2]
# A fresh process: only the service is imported, as in a new container before its first clip.
REDELIVERY = textwrap.dedent("""
    import base64, json, sys
    from pathlib import Path
    from functions.events import ObjectRef
    from functions.service import ClassifyService
    from shared.config import FunctionSettings
    from shared.runtime import Classifier
    from tests.memory_store import MemoryStore

    store = MemoryStore("frames")
    for key, body in json.loads(sys.argv[2]).items():
        store.put(key, base64.b64decode(body))
    etag = store.head("incoming/long.mp4").etag
    service = ClassifyService(FunctionSettings(), lambda bucket: store, Classifier.from_dir(Path(sys.argv[1])))
    [outcome] = service.run([ObjectRef("frames", "incoming/long.mp4", etag=etag)])
    print(json.dumps({"status": outcome.status.value, "downloads": store.downloads,
                      "video_code": sorted(m for m in sys.modules if m.startswith("functions.video"))}))
""")


def test_a_redelivered_too_many_frames_clip_is_skipped_in_a_fresh_process(
        store: MemoryStore, tiny: Classifier, tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The skip check must know VideoTooManyFramesError before the video code is ever imported."""
    too_many = FakeProcessVideo(VideoTooManyFramesError("'incoming/long.mp4' holds more than 10 frames, the "
                                                        "decoded-frame limit; cut it.", key="incoming/long.mp4"))
    monkeypatch.setattr(clips, "process_video", too_many)
    store.put("incoming/long.mp4", CLIP_BYTES)
    [first] = make_service(store, tiny).run(refs(store, ["incoming/long.mp4"]))
    assert first.status is Status.ERROR and store.get_json("results/long.mp4.json")["error"]["type"] == \
        "VideoTooManyFramesError"
    objects = {key: base64.b64encode(body).decode() for key, body in store.objects.items()}
    proc = subprocess.run([sys.executable, "-c", REDELIVERY, str(tiny_dir), json.dumps(objects)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"status": "skipped", "downloads": [], "video_code": []}


# -- dispatch ---------------------------------------------------------------------------------


def test_frames_and_clips_are_dispatched_by_suffix_in_any_case(store: MemoryStore, tiny: Classifier,
                                                              fake_video: FakeProcessVideo,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    keys = ["incoming/a.jpg", "incoming/b.MP4", "incoming/c.jpg", "incoming/d.avi", "incoming/e.Mov",
            "incoming/f.mkv", "incoming/g.mp4.jpg", "incoming/h.png"]
    for key in keys:
        store.put(key, CLIP_BYTES if key.lower().endswith((".mp4", ".avi", ".mov", ".mkv")) else frame(RED))
    batches: list[int] = []
    real_predict = tiny.predict

    def counting_predict(images: Any, **kw: Any) -> Any:
        batches.append(len(images))
        return real_predict(images, **kw)

    monkeypatch.setattr(tiny, "predict", counting_predict)

    outcomes = make_service(store, tiny).run(refs(store, keys))

    assert [o.ref.key for o in outcomes] == keys  # the order of the event, whatever the path
    assert [o.status for o in outcomes] == [Status.OK] * len(keys)
    assert batches == [4]  # every frame in one inference batch, the clips not in it
    assert [call["name"] for call in fake_video.calls] == ["incoming/b.MP4", "incoming/d.avi", "incoming/e.Mov",
                                                           "incoming/f.mkv"]
    assert all(call["classifier"] is tiny for call in fake_video.calls)  # the model loaded for the event
    kinds = {o.ref.key: o.result["kind"] for o in outcomes if o.result is not None}
    assert kinds["incoming/a.jpg"] == kinds["incoming/g.mp4.jpg"] == "frame"
    assert kinds["incoming/b.MP4"] == "video"


def test_a_clip_gets_its_annotated_mp4_then_its_json(store: MemoryStore, tiny: Classifier,
                                                     fake_video: FakeProcessVideo) -> None:
    etag = store.put("incoming/cam 1/clip.mp4", CLIP_BYTES)
    limits = VideoLimits(max_bytes=10_000, sample_fps=2.0)
    [outcome] = make_service(store, tiny, video=limits).run(refs(store, ["incoming/cam 1/clip.mp4"]))

    assert outcome.status is Status.OK and outcome.result_key == "results/cam 1/clip.mp4.json"
    [call] = fake_video.calls
    assert call["bytes"] == CLIP_BYTES and call["limits"] == limits
    assert call["path_in"].name == "input" and call["out_path"].name == "annotated.mp4"  # generated names
    assert not call["path_in"].parent.exists()  # the workspace is gone
    annotated = "results/cam 1/clip.mp4.annotated.mp4"
    assert store.objects[annotated] == b"annotated:" + CLIP_BYTES
    assert store.content_types[annotated] == "video/mp4"
    assert sorted(store.objects) == ["incoming/cam 1/clip.mp4", annotated, "results/cam 1/clip.mp4.json"]
    doc = store.get_json("results/cam 1/clip.mp4.json")
    assert doc["status"] == "ok" and doc["kind"] == "video" and doc["error"] is None
    assert doc["annotated_key"] == annotated
    assert doc["source"] == {"bucket": "frames", "key": "incoming/cam 1/clip.mp4", "etag": etag,
                             "size": len(CLIP_BYTES), "version_id": None}
    assert doc["model"] == {"version": "tiny-v1", "backbone": "tiny_mean_rgb", "input_size": [32, 32],
                            "classes": ["bus", "car"], "positive_class": "car", "threshold": 0.5}
    assert doc["summary"]["dominant_label"] == "car" and doc["throughput"]["frames_per_s"] == 60.0
    assert set(doc["timings_ms"]) == {"download", "process", "upload", "decode", "inference", "encode"}
    assert (doc["timings_ms"]["decode"], doc["timings_ms"]["inference"], doc["timings_ms"]["encode"]) == \
        (100.0, 300.0, 90.0)  # process_video's phases, in ms like the function's own stages
    assert doc["processed_at"] == "2024-06-01T10:00:00.000Z" and doc["schema_version"] == 1


def test_clips_outside_the_input_prefix_are_ignored(store: MemoryStore, tiny: Classifier,
                                                    fake_video: FakeProcessVideo) -> None:
    store.put("results/planted.mp4", CLIP_BYTES)
    [outcome] = make_service(store, tiny).run(refs(store, ["results/planted.mp4"]))
    assert outcome.status is Status.IGNORED and fake_video.calls == [] and store.gets == []


# -- bad clips and faults ---------------------------------------------------------------------


def test_a_bad_clip_gets_an_error_result_and_is_not_redone(store: MemoryStore, tiny: Classifier,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    bad = FakeProcessVideo(NotAVideoError("'incoming/bad.mp4' could not be opened as a video; upload the "
                                          "complete clip.", key="incoming/bad.mp4"))
    monkeypatch.setattr(clips, "process_video", bad)
    store.put("incoming/bad.mp4", CLIP_BYTES)
    store.put("incoming/good.jpg", frame(BLUE))
    svc = make_service(store, tiny)
    outcomes = svc.run(refs(store, ["incoming/bad.mp4", "incoming/good.jpg"]))

    assert [o.status for o in outcomes] == [Status.ERROR, Status.OK]
    doc = store.get_json("results/bad.mp4.json")
    assert doc["status"] == "error" and doc["kind"] == "video" and doc["annotated_key"] is None
    assert doc["error"]["type"] == "NotAVideoError" and doc["error"]["message"].endswith(".")
    assert doc["summary"] is None and doc["frames"] is None
    assert "results/bad.mp4.annotated.mp4" not in store.objects
    assert store.get_json("results/good.jpg.json")["label"] == "bus"

    again = svc.run([ObjectRef(store.bucket, "incoming/bad.mp4", etag=doc["source"]["etag"])])
    assert again[0].status is Status.SKIPPED and len(bad.calls) == 1


def test_an_oversize_clip_is_refused_on_its_head_before_any_download(store: MemoryStore, tiny: Classifier,
                                                                     fake_video: FakeProcessVideo) -> None:
    store.put("incoming/huge.mkv", CLIP_BYTES)
    svc = make_service(store, tiny, video=VideoLimits(max_bytes=10))
    [outcome] = svc.run(refs(store, ["incoming/huge.mkv"]))
    assert outcome.status is Status.ERROR and isinstance(outcome.error, VideoTooLargeError)
    assert store.downloads == [] and fake_video.calls == []
    doc = store.get_json("results/huge.mkv.json")
    assert doc["error"]["type"] == "VideoTooLargeError" and "MAX_VIDEO_BYTES" in doc["error"]["message"]
    assert doc["source"]["size"] == len(CLIP_BYTES) and doc["source"]["etag"]


def test_a_deleted_clip_gets_a_storage_error_result(store: MemoryStore, tiny: Classifier,
                                                    fake_video: FakeProcessVideo) -> None:
    [outcome] = make_service(store, tiny).run(refs(store, ["incoming/gone.avi"]))
    assert outcome.status is Status.ERROR and fake_video.calls == []
    doc = store.get_json("results/gone.avi.json")
    assert doc["error"]["type"] == "ObjectNotFoundError" and not is_final(doc)


def test_a_transient_fault_fails_only_the_clip_and_writes_nothing_for_it(tiny: Classifier,
                                                                        fake_video: FakeProcessVideo) -> None:
    store = FlakyDownloads("frames")
    store.put("incoming/clip.mp4", CLIP_BYTES)
    store.put("incoming/frame.jpg", frame(RED))
    outcomes = make_service(store, tiny).run(refs(store, ["incoming/clip.mp4", "incoming/frame.jpg"]))
    assert [o.status for o in outcomes] == [Status.FAILED, Status.OK]
    assert outcomes[0].needs_retry and isinstance(outcomes[0].error, TransientStorageError)
    assert sorted(k for k in store.objects if k.startswith("results/")) == ["results/frame.jpg.json"]


def test_a_bug_in_the_clip_path_fails_only_that_clip(store: MemoryStore, tiny: Classifier,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    broken = FakeProcessVideo(RuntimeError("unexpected"))
    monkeypatch.setattr(clips, "process_video", broken)
    for key in ("incoming/1.mp4", "incoming/2.mp4"):
        store.put(key, CLIP_BYTES)
    outcomes = make_service(store, tiny).run(refs(store, ["incoming/1.mp4", "incoming/2.mp4"]))
    assert [o.status for o in outcomes] == [Status.FAILED, Status.FAILED]  # each tried, neither written
    assert len(broken.calls) == 2 and not any(k.startswith("results/") for k in store.objects)
    assert not broken.calls[0]["path_in"].parent.exists()  # cleaned up after the failure too


def test_new_bytes_under_a_clip_key_are_processed_again(store: MemoryStore, tiny: Classifier,
                                                        fake_video: FakeProcessVideo) -> None:
    svc = make_service(store, tiny)
    store.put("incoming/clip.mp4", CLIP_BYTES)
    svc.run(refs(store, ["incoming/clip.mp4"]))
    etag = store.put("incoming/clip.mp4", CLIP_BYTES + b" v2")
    [outcome] = svc.run([ObjectRef(store.bucket, "incoming/clip.mp4", etag=etag)])
    assert outcome.status is Status.OK and len(fake_video.calls) == 2
    assert store.get_json("results/clip.mp4.json")["source"]["etag"] == etag


def test_same_clip_same_model_is_skipped_without_downloading(store: MemoryStore, tiny: Classifier,
                                                             fake_video: FakeProcessVideo, tmp_path: Path) -> None:
    etag = store.put("incoming/clip.mp4", CLIP_BYTES)
    ref = ObjectRef(store.bucket, "incoming/clip.mp4", etag=etag)
    make_service(store, tiny).run([ref])
    store.downloads.clear()
    [outcome] = make_service(store, tiny).run([ref])
    assert outcome.status is Status.SKIPPED and store.downloads == [] and len(fake_video.calls) == 1

    build_tiny_bundle(tmp_path / "v2", version="tiny-v2")
    [outcome] = make_service(store, Classifier.from_dir(tmp_path / "v2")).run([ref])
    assert outcome.status is Status.OK and len(fake_video.calls) == 2  # a new model redoes it
    assert store.get_json("results/clip.mp4.json")["model"]["version"] == "tiny-v2"
