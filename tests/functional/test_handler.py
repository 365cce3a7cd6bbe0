"""The cloud function's handler against a real (moto) S3 server and a real tiny bundle."""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from devstack.samples import jpeg_bytes
from functions import classify
from functions.classify import make_handler
from shared.config import DecodeLimits, FunctionSettings, S3Settings
from shared.errors import (
    AccessDeniedError,
    BundleIncompatibleError,
    BundleIntegrityError,
    TransientStorageError,
    UnsupportedEventError,
)
from shared.runtime import Classifier
from shared.storage import ObjectData, ObjectStore
from tests.fakes import (
    CountingLoader,
    TickingClock,
    build_tiny_bundle,
    eventbridge_event,
    load_event,
    publish_bundle,
    s3_event,
    sqs_event,
    yandex_event,
)
from tests.result_schema import assert_valid_result

REPO = Path(__file__).resolve().parents[2]
KEY = "incoming/cam 1/frame+1 100%/Ünïcode-ключ.jpg"
RESULT_KEY = "results/cam 1/frame+1 100%/Ünïcode-ключ.jpg.json"
# Never on the still-frame path; PyAV (av, FFmpeg) only once a clip arrives.
HEAVY = ("tensorflow", "keras", "lightgbm", "scipy", "sklearn", "av")
RED, BLUE = (220, 30, 30), (30, 30, 220)


class FlakyStore(ObjectStore):
    """An ObjectStore whose reads of some keys fail as an S3 outage would."""

    def __init__(self, client: Any, bucket: str, flaky: set[str]) -> None:
        super().__init__(client, bucket)
        self.flaky = flaky

    def get(self, key: str, *, max_bytes: int | None = None) -> ObjectData:
        if key in self.flaky:
            raise TransientStorageError(f"The object store failed on s3://{self.bucket}/{key} (503) after "
                                        "retries; retry later.", bucket=self.bucket, key=key)
        return super().get(key, max_bytes=max_bytes)


@pytest.fixture()
def settings(tmp_path: Path, s3_settings: S3Settings) -> FunctionSettings:
    return FunctionSettings(model_cache_dir=str(tmp_path / "cache"), s3=s3_settings, max_workers=4,
                            limits=DecodeLimits(max_bytes=200_000, max_pixels=1_000_000))


def frame(colour: tuple[int, int, int] = RED) -> bytes:
    return jpeg_bytes(Image.new("RGB", (320, 240), colour))


def put(store: ObjectStore, key: str, data: bytes | None = None) -> str:
    return store.put(key, frame() if data is None else data, content_type="image/jpeg")


def result(store: ObjectStore, key: str = RESULT_KEY) -> dict[str, Any]:
    return store.get_json(key)


def all_keys(store: ObjectStore) -> list[str]:
    return sorted(info.key for info in store.list(""))


# -- the happy path -------------------------------------------------------------------


def test_ok_result_holds_everything(app: classify.App, store: ObjectStore, s3_client: Any,
                                    caplog: pytest.LogCaptureFixture) -> None:
    etag = put(store, KEY)
    caplog.set_level(logging.INFO, logger="functions")
    response = app.handle(s3_event(store.bucket, [KEY], etags=[etag]), None)

    assert response["records"]["ok"] == 1 and response["source"] == "s3"
    doc = result(store)
    assert doc["status"] == "ok" and doc["error"] is None
    assert doc["source"] == {"bucket": store.bucket, "key": KEY, "etag": etag, "size": len(frame()),
                             "version_id": None}
    assert doc["label"] == "car" and doc["probability"] > 0.99
    assert set(doc["probabilities"]) == {"bus", "car"} and doc["threshold"] == 0.5
    assert doc["model"] == {"version": "tiny-v1", "backbone": "tiny_mean_rgb", "input_size": [32, 32]}
    assert doc["imagenet_top"] is None
    assert set(doc["timings_ms"]) == {"download", "decode", "inference"}
    assert all(v >= 0 for v in doc["timings_ms"].values()) and doc["batch_size"] == 1
    assert doc["processed_at"] == "2024-06-01T10:00:00.000Z"
    assert_valid_result(doc)
    head = s3_client.head_object(Bucket=store.bucket, Key=RESULT_KEY)
    assert head["Metadata"] == {"source-etag": etag, "model-version": "tiny-v1"}
    assert head["ContentType"] == "application/json"

    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "functions.classify"]
    record_lines = [line for line in lines if line.get("key") == KEY]
    assert len(record_lines) == 1
    assert {"key", "status", "label", "probability", "model_version", "ms"} <= set(record_lines[0])
    assert record_lines[0]["status"] == "ok" and record_lines[0]["label"] == "car"
    assert "Records" not in caplog.text  # never the whole event


def test_blue_frame_is_the_other_class_and_imagenet_top_is_reported(
        settings: FunctionSettings, s3_client: Any, store: ObjectStore, tmp_path: Path) -> None:
    build_tiny_bundle(tmp_path / "top", with_top=True, version="tiny-top")
    publish_bundle(store, tmp_path / "top")
    put(store, "incoming/blue.jpg", frame(BLUE))
    handler = make_handler(settings, stores=lambda b: ObjectStore(s3_client, b))
    handler(s3_event(store.bucket, ["incoming/blue.jpg"]), None)
    doc = result(store, "results/blue.jpg.json")
    assert doc["label"] == "bus" and doc["model"]["version"] == "tiny-top"
    assert [t["class"] for t in doc["imagenet_top"]][0] == "school bus" and len(doc["imagenet_top"]) == 3
    assert_valid_result(doc)


@pytest.mark.parametrize("make_event, source", [
    (lambda bucket: s3_event(bucket, [KEY]), "s3"),
    (lambda bucket: sqs_event(bucket, [KEY]), "sqs"),
    (lambda bucket: eventbridge_event(bucket, KEY), "eventbridge"),
    (lambda bucket: yandex_event(bucket, [KEY]), "yandex"),
], ids=["s3", "sqs", "eventbridge", "yandex"])
def test_every_event_source_gives_the_same_result(app: classify.App, store: ObjectStore, source: str,
                                                  make_event: Callable[[str], dict[str, Any]]) -> None:
    etag = put(store, KEY)
    response = app.handle(make_event(store.bucket), None)
    doc = result(store)
    assert (doc["status"], doc["label"], doc["source"]["key"], doc["source"]["etag"]) == ("ok", "car", KEY, etag)
    if source == "sqs":
        assert response == {"batchItemFailures": []}
    else:
        assert response["source"] == source and response["records"]["ok"] == 1


def test_one_event_is_one_inference_batch(app: classify.App, store: ObjectStore,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    keys = [f"incoming/cam{i}.jpg" for i in range(5)]
    for i, key in enumerate(keys):
        put(store, key, frame(RED if i % 2 == 0 else BLUE))
    batches: list[int] = []
    original = Classifier.predict

    def spy(self: Classifier, images: np.ndarray, **kw: Any) -> Any:
        batches.append(len(images))
        return original(self, images, **kw)

    monkeypatch.setattr(Classifier, "predict", spy)
    app.handle(s3_event(store.bucket, keys), None)
    assert batches == [5]
    labels = [result(store, f"results/cam{i}.jpg.json")["label"] for i in range(5)]
    assert labels == ["car", "bus", "car", "bus", "car"]


# -- bad input ------------------------------------------------------------------------


def test_every_bad_input_gets_an_error_result_and_spares_the_good_one(app: classify.App, store: ObjectStore) -> None:
    bomb = io.BytesIO()
    Image.new("L", (2000, 1000)).save(bomb, "PNG")  # 2 MP in 2 kB, over the 1 MP test limit
    good = frame()
    inputs = {
        "incoming/good.jpg": good,
        "incoming/big.jpg": bytes(np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8)),
        "incoming/text.jpg": b"This is a text file, not a frame.\n",
        "incoming/empty.jpg": b"",
        "incoming/truncated.jpg": good[: len(good) // 2],
        "incoming/bomb.png": bomb.getvalue(),
    }
    for key, data in inputs.items():
        put(store, key, data)
    expected = {"big.jpg": "ImageTooLargeError", "text.jpg": "NotAnImageError", "empty.jpg": "NotAnImageError",
                "truncated.jpg": "TruncatedImageError", "bomb.png": "DecompressionBombError",
                "deleted.jpg": "ObjectNotFoundError"}
    event = s3_event(store.bucket, [*inputs, "incoming/deleted.jpg"])

    response = app.handle(event, None)

    assert response["records"] == {"ok": 1, "error": 6, "skipped": 0, "ignored": 0, "failed": 0}
    assert result(store, "results/good.jpg.json")["label"] == "car"
    for name, kind in expected.items():
        doc = result(store, f"results/{name}.json")
        assert doc["status"] == "error" and doc["label"] is None and doc["probabilities"] is None
        assert doc["error"]["type"] == kind, name
        assert f"incoming/{name}" in doc["error"]["message"] and doc["error"]["message"].endswith(".")
        assert doc["model"]["version"] == "tiny-v1" and doc["processed_at"].endswith("Z")
        assert_valid_result(doc)
    assert result(store, "results/big.jpg.json")["source"]["size"] == 300_000
    assert "deleted" in result(store, "results/deleted.jpg.json")["error"]["message"]


def test_keys_outside_the_input_prefix_are_ignored(settings: FunctionSettings, s3_client: Any,
                                                   store: ObjectStore, model: str) -> None:
    for key in ("other/a.jpg", "results/own-output.jpg", "incoming/"):
        put(store, key)
    before = all_keys(store)
    loader = CountingLoader(settings)
    handler = make_handler(settings, stores=lambda b: ObjectStore(s3_client, b), loader=loader)

    response = handler(s3_event(store.bucket, ["other/a.jpg", "results/own-output.jpg", "incoming/"]), None)

    assert response["records"]["ignored"] == 3 and response["records"]["ok"] == 0
    assert all_keys(store) == before  # nothing written anywhere
    assert loader.calls == 0  # and the model was not even loaded


# -- idempotency ----------------------------------------------------------------------


@pytest.mark.parametrize("make_event", [
    lambda bucket, etag: s3_event(bucket, [KEY], etags=[etag]),
    lambda bucket, etag: sqs_event(bucket, [KEY]),
    lambda bucket, etag: yandex_event(bucket, [KEY]),
], ids=["s3-with-etag", "sqs-without-etag", "yandex"])
def test_repeated_delivery_leaves_the_result_alone(app: classify.App, store: ObjectStore, s3_client: Any,
                                                   make_event: Callable[[str, str], dict[str, Any]]) -> None:
    etag = put(store, KEY)
    event = make_event(store.bucket, etag)
    app.handle(event, None)
    first = s3_client.head_object(Bucket=store.bucket, Key=RESULT_KEY)
    first_doc = result(store)

    app.handle(event, None)
    app.handle(json.loads(json.dumps(event)), None)

    again = s3_client.head_object(Bucket=store.bucket, Key=RESULT_KEY)
    assert (again["ETag"], again["LastModified"]) == (first["ETag"], first["LastModified"])
    assert result(store) == first_doc
    assert [k for k in all_keys(store) if k.startswith("results/")] == [RESULT_KEY]


def test_new_bytes_under_the_same_key_are_classified_again(app: classify.App, store: ObjectStore) -> None:
    put(store, KEY, frame(RED))
    app.handle(s3_event(store.bucket, [KEY]), None)
    assert result(store)["label"] == "car"
    new_etag = put(store, KEY, frame(BLUE))
    response = app.handle(s3_event(store.bucket, [KEY], etags=[new_etag]), None)
    assert response["records"]["ok"] == 1
    assert result(store)["label"] == "bus" and result(store)["source"]["etag"] == new_etag


def test_redelivery_after_the_frame_was_deleted_keeps_the_result(app: classify.App, store: ObjectStore) -> None:
    put(store, KEY)
    app.handle(yandex_event(store.bucket, [KEY]), None)
    store.client.delete_object(Bucket=store.bucket, Key=KEY)
    response = app.handle(yandex_event(store.bucket, [KEY]), None)
    assert response["records"]["skipped"] == 1
    assert result(store)["status"] == "ok"


# -- transient faults -----------------------------------------------------------------


def test_sqs_batch_names_only_the_failed_message(settings: FunctionSettings, s3_client: Any,
                                                 store: ObjectStore, model: str) -> None:
    keys = ["incoming/a.jpg", "incoming/b.jpg", "incoming/c.jpg"]
    for key in keys:
        put(store, key)
    flaky = make_handler(settings, stores=lambda b: FlakyStore(s3_client, b, {"incoming/b.jpg"}))
    event = sqs_event(store.bucket, keys)

    assert flaky(event, None) == {"batchItemFailures": [{"itemIdentifier": "msg-0001"}]}
    assert result(store, "results/a.jpg.json")["status"] == "ok"
    assert result(store, "results/c.jpg.json")["status"] == "ok"
    assert store.head("results/b.jpg.json") is None  # nothing written for the failed one

    healthy = make_handler(settings, stores=lambda b: ObjectStore(s3_client, b))
    assert healthy(event, None) == {"batchItemFailures": []}
    assert result(store, "results/b.jpg.json")["status"] == "ok"


def test_sqs_malformed_message_is_reported_and_the_rest_processed(app: classify.App, store: ObjectStore) -> None:
    put(store, KEY)
    event = load_event("sqs_mixed_batch")
    event["Records"][0]["body"] = json.dumps(s3_event(store.bucket, [KEY]))

    response = app.handle(event, None)

    assert response == {"batchItemFailures": [{"itemIdentifier": "7b9f1c2e-0d3a-4c5b-9e8f-1a2b3c4d5e6f"}]}
    assert result(store)["status"] == "ok"


def test_transient_fault_is_raised_for_direct_invocations(settings: FunctionSettings, s3_client: Any,
                                                           store: ObjectStore, model: str) -> None:
    for key in ("incoming/a.jpg", "incoming/b.jpg"):
        put(store, key)
    handler = make_handler(settings, stores=lambda b: FlakyStore(s3_client, b, {"incoming/b.jpg"}))
    with pytest.raises(TransientStorageError) as info:
        handler(s3_event(store.bucket, ["incoming/a.jpg", "incoming/b.jpg"]), None)
    assert info.value.retryable and "incoming/b.jpg" in str(info.value)
    assert result(store, "results/a.jpg.json")["status"] == "ok"  # the good record was not held back
    assert store.head("results/b.jpg.json") is None


# -- the model ------------------------------------------------------------------------


def test_model_is_loaded_once_per_container(app: classify.App, store: ObjectStore) -> None:
    loader = app._loader
    assert isinstance(loader, CountingLoader) and loader.calls == 0  # not at construction
    for i in range(3):
        put(store, f"incoming/{i}.jpg")
        app.handle(s3_event(store.bucket, [f"incoming/{i}.jpg"]), None)
    assert loader.calls == 1
    assert [result(store, f"results/{i}.jpg.json")["status"] for i in range(3)] == ["ok"] * 3


def test_module_handler_builds_its_app_lazily_from_the_environment(
        monkeypatch: pytest.MonkeyPatch, store: ObjectStore, model: str, tmp_path: Path,
        s3_settings: S3Settings) -> None:
    monkeypatch.setattr(classify, "_app", None)
    for name, value in {"BUCKET": store.bucket, "S3_ENDPOINT_URL": str(s3_settings.endpoint_url),
                        "MODEL_CACHE_DIR": str(tmp_path / "env-cache"), "INPUT_PREFIX": "incoming"}.items():
        monkeypatch.setenv(name, value)
    calls: list[str] = []
    real = classify.load_classifier

    def counting_load(s: Any, settings: Any) -> Any:
        calls.append(s.bucket)
        return real(s, settings)

    monkeypatch.setattr(classify, "load_classifier", counting_load)
    for i in range(2):
        put(store, f"incoming/env{i}.jpg")
        classify.handler(s3_event(store.bucket, [f"incoming/env{i}.jpg"]), None)
    assert calls == [store.bucket]
    assert classify.get_app().settings.model_cache_dir == str(tmp_path / "env-cache")
    assert result(store, "results/env1.jpg.json")["status"] == "ok"


def test_pinned_model_version_wins_over_latest(settings: FunctionSettings, s3_client: Any,
                                               store: ObjectStore, tmp_path: Path) -> None:
    build_tiny_bundle(tmp_path / "v2", version="tiny-v2")
    publish_bundle(store, tmp_path / "v2")
    build_tiny_bundle(tmp_path / "v1", version="tiny-v1")
    publish_bundle(store, tmp_path / "v1")  # latest.json now names tiny-v1
    pinned = dataclasses.replace(settings, model_version="tiny-v2")
    put(store, "incoming/a.jpg")
    make_handler(pinned, stores=lambda b: ObjectStore(s3_client, b))(s3_event(store.bucket, ["incoming/a.jpg"]), None)
    assert result(store, "results/a.jpg.json")["model"]["version"] == "tiny-v2"


def test_tampered_bundle_is_refused_clearly_and_not_cached(app: classify.App, store: ObjectStore) -> None:
    put(store, "incoming/a.jpg")
    head = store.get("models/tiny-v1/head.onnx").body
    store.put("models/tiny-v1/head.onnx", head + b"\0")
    event = s3_event(store.bucket, ["incoming/a.jpg"])

    with pytest.raises(BundleIntegrityError) as info:
        app.handle(event, None)
    assert "head.onnx" in str(info.value) and "sha256" in str(info.value)
    assert store.head("results/a.jpg.json") is None

    store.put("models/tiny-v1/head.onnx", head)  # restored: the next call loads it
    app.handle(event, None)
    assert result(store, "results/a.jpg.json")["status"] == "ok"


def test_tampered_manifest_and_incompatible_schema_are_refused(settings: FunctionSettings, s3_client: Any,
                                                               store: ObjectStore, model: str) -> None:
    put(store, "incoming/a.jpg")
    event = s3_event(store.bucket, ["incoming/a.jpg"])
    manifest = store.get_json("models/tiny-v1/manifest.json")
    store.put_json("models/tiny-v1/manifest.json", {**manifest, "threshold": 0.01})
    with pytest.raises(BundleIntegrityError, match="latest.json"):
        make_handler(settings, stores=lambda b: ObjectStore(s3_client, b))(event, None)

    store.put_json("models/tiny-v1/manifest.json", {**manifest, "schema_version": 99})
    pinned = dataclasses.replace(settings, model_version="tiny-v1")  # no latest.json checksum
    with pytest.raises(BundleIncompatibleError, match="schema version 99"):
        make_handler(pinned, stores=lambda b: ObjectStore(s3_client, b))(event, None)
    assert store.head("results/a.jpg.json") is None


def test_handling_an_event_imports_no_heavy_library(store: ObjectStore, model: str, tmp_path: Path,
                                                    s3_settings: S3Settings) -> None:
    from tests.video_fakes import write_clip

    put(store, KEY)
    store.put("incoming/clip.mp4", write_clip(tmp_path / "clip.mp4", ["car"] * 5).read_bytes())
    code = textwrap.dedent("""
        import json, sys
        from functions import classify
        assert classify._app is None, "the handler must not be built at import time"
        response = classify.handler(json.loads(sys.argv[1]), None)
        heavy = sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[3].split(",")))
        video_code = "functions.video" in sys.modules
        clip = classify.handler(json.loads(sys.argv[2]), None)  # the control: a clip does load PyAV
        print(json.dumps({"response": response, "heavy": heavy, "video_code": video_code, "clip": clip,
                          "av_after_clip": "av" in sys.modules}))
    """)
    env = {**os.environ, "BUCKET": store.bucket, "S3_ENDPOINT_URL": str(s3_settings.endpoint_url),
           "MODEL_CACHE_DIR": str(tmp_path / "subprocess-cache"), "PYTHONPATH": str(REPO)}
    events = [json.dumps(s3_event(store.bucket, [key])) for key in (KEY, "incoming/clip.mp4")]
    proc = subprocess.run([sys.executable, "-c", code, *events, ",".join(HEAVY)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["heavy"] == []  # after a frame event: no training stack, and no FFmpeg
    assert out["video_code"] is False  # nor the video module (a lazy import on the cold path)
    assert out["response"]["records"]["ok"] == 1
    assert result(store)["status"] == "ok"
    assert out["clip"]["records"]["ok"] == 1 and out["av_after_clip"] is True


class ListlessStore(ObjectStore):
    """What a role without s3:ListBucket sees: a missing key is 403, not 404."""

    def head(self, key: str) -> Any:
        info = super().head(key)
        if info is None:
            raise AccessDeniedError(f"Access to s3://{self.bucket}/{key} was denied; grant this role the "
                                    "needed s3 permission.", bucket=self.bucket, key=key)
        return info

    def get(self, key: str, *, max_bytes: int | None = None) -> ObjectData:
        self.head(key)
        return super().get(key, max_bytes=max_bytes)


def test_least_privilege_403_for_missing_keys_is_not_an_error(settings: FunctionSettings, s3_client: Any,
                                                             store: ObjectStore, model: str) -> None:
    put(store, KEY)
    handler = make_handler(settings, stores=lambda b: ListlessStore(s3_client, b), clock=TickingClock())
    event = yandex_event(store.bucket, [KEY])
    assert handler(event, None)["records"]["ok"] == 1  # the 403 on the result HEAD means "not done yet"
    first = result(store)
    assert handler(event, None)["records"]["skipped"] == 1

    store.client.delete_object(Bucket=store.bucket, Key=KEY)
    assert handler(event, None)["records"]["skipped"] == 1  # a 403 on the gone frame keeps the result
    assert result(store) == first

    handler(yandex_event(store.bucket, ["incoming/never-uploaded.jpg"]), None)
    error = result(store, "results/never-uploaded.jpg.json")["error"]
    assert error["type"] == "AccessDeniedError" and "deleted before it was read" in error["message"]


def test_unknown_event_is_refused_with_its_shape_logged(app: classify.App,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="functions")
    with pytest.raises(UnsupportedEventError, match="Yandex"):
        app.handle({"httpMethod": "GET", "body": "secret frame bytes"}, None)
    (line,) = [json.loads(r.getMessage()) for r in caplog.records if r.name == "functions.classify"]
    assert line["event_keys"] == ["body", "httpMethod"] and "secret" not in caplog.text
