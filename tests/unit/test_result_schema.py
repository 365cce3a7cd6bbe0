"""docs/schema/result.schema.json: a valid draft 2020-12 schema that refuses what a result must not be.

Real results are checked against it where the functional tests make them (tests/functional/
test_handler.py and test_handler_video.py: frame ok and error, clip ok, error and partial).
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from shared.errors import ERROR_TYPES

pytest.importorskip("jsonschema", reason="jsonschema (a moto[server] dependency) is not installed")

from tests.result_schema import schema_errors  # noqa: E402 - after the importorskip above

FRAME_OK: dict[str, Any] = {
    "schema_version": 1, "kind": "frame", "status": "ok",
    "source": {"bucket": "cctv", "key": "incoming/cam1/0001.jpg", "etag": "9b2c", "size": 183044, "version_id": None},
    "model": {"version": "20261121T182340Z-87e57862", "backbone": "mobilenet_v2", "input_size": [224, 224]},
    "timings_ms": {"download": 12.1, "decode": 4.0, "inference": 9.3},
    "processed_at": "2026-11-21T18:30:00.000Z", "error": None,
    "label": "car", "probability": 0.97, "probabilities": {"bus": 0.03, "car": 0.97},
    "threshold": 0.42, "positive_class": "car", "imagenet_top": [{"class": "sports car", "probability": 0.61}],
    "batch_size": 1,
}


def changed(**fields: Any) -> dict[str, Any]:
    doc = copy.deepcopy(FRAME_OK)
    doc.update(fields)
    return doc


def test_the_readme_example_is_valid_and_model_takes_new_fields() -> None:
    assert schema_errors(FRAME_OK) == []
    assert schema_errors(changed(model={**FRAME_OK["model"], "weights": "imagenet"})) == []


@pytest.mark.parametrize(("doc", "where"), [
    ({k: v for k, v in FRAME_OK.items() if k != "status"}, "(document)"),
    (changed(label=None), "label"),
    (changed(status="error"), "error"),
    (changed(error={"type": "NotAnImageError", "message": "Not an image."}), "error"),
    (changed(processed_at="2026-11-21 18:30:00"), "processed_at"),
    (changed(timings_ms={"download": -1.0}), "timings_ms/download"),
    (changed(timings_ms={"download_s": 0.01}), "timings_ms"),
    (changed(source={**FRAME_OK["source"], "extra": 1}), "source"),
    (changed(kind="video"), "(document)"),
], ids=["no-status", "ok-without-label", "error-without-error", "ok-with-error", "bad-time", "negative-ms",
        "seconds-key", "unknown-source-field", "frame-fields-as-video"])
def test_what_a_result_must_not_be_is_refused(doc: dict[str, Any], where: str) -> None:
    assert any(line.startswith(f"{where}:") for line in schema_errors(doc)), schema_errors(doc)


@pytest.mark.parametrize("name", sorted(ERROR_TYPES))
def test_every_error_type_fits_the_error_field(name: str) -> None:
    doc = changed(status="error", error={"type": name, "message": "What to do."}, label=None, probability=None,
                  probabilities=None, imagenet_top=None, batch_size=0)
    assert schema_errors(doc) == []


CLIP_OK: dict[str, Any] = {
    **{k: v for k, v in FRAME_OK.items() if k in ("schema_version", "status", "model", "processed_at", "error")},
    "kind": "video",
    "source": {**FRAME_OK["source"], "key": "incoming/cam1/clip.mp4"},
    "timings_ms": {"download": 50.0, "process": 900.0, "decode": 300.0, "inference": 400.0, "encode": 150.0,
                   "upload": 20.0},
    "annotated_key": "results/cam1/clip.mp4.annotated.mp4",
    "video": {"container": "mov,mp4,m4a,3gp,3g2,mj2", "codec": "h264", "width": 320, "height": 240, "fps": 10.0,
              "duration_s": 6.0, "frames_declared": 60, "bytes": 90000, "frames_decoded": 20, "frames_sampled": 20,
              "bad_packets": 0},
    "sampling": {"mode": "every_frame", "fps": None, "requested_fps": None, "max_frames": 1500, "capped": False},
    "summary": {"dominant_label": "car", "label_share": {"bus": 0.0, "car": 1.0}, "imagenet_top": None,
                "segments": [{"label": "car", "start_s": 0.0, "end_s": 2.0, "start_frame": 0, "end_frame": 19,
                              "frames": 20, "sampled": 20}], "longest": {"bus": [], "car": []}},
    "partial": {"stopped_at_frame": 20, "stopped_at_s": 1.9, "frames_declared": 60, "cause": "time",
                "reason": "Decoding stopped at frame 20 to leave time to write this result."},
    "annotated": {"codec": "h264", "pixel_format": "yuv420p", "width": 320, "height": 240, "fps": 10.0, "frames": 20},
    "throughput": {"frames_per_s": 22.2, "sampled_frames_per_s": 22.2},
    "frames": [{"frame": 0, "time_s": 0.0, "label": "car", "probability": 0.9, "positive_probability": 0.9,
                "imagenet_top": None}],
}


@pytest.mark.parametrize("cause", ["time", "cut_short", "damaged"])
def test_a_partial_clip_says_its_cause(cause: str) -> None:
    assert schema_errors({**CLIP_OK, "partial": {**CLIP_OK["partial"], "cause": cause}}) == []
    assert schema_errors({**CLIP_OK, "partial": None}) == []


@pytest.mark.parametrize("partial", [
    {k: v for k, v in CLIP_OK["partial"].items() if k != "cause"},
    {**CLIP_OK["partial"], "cause": "tired"},
], ids=["no-cause", "unknown-cause"])
def test_a_partial_without_a_known_cause_is_refused(partial: dict[str, Any]) -> None:
    assert any(line.startswith("partial") for line in schema_errors({**CLIP_OK, "partial": partial}))


def test_annotated_key_is_described_with_its_long_key_fallback() -> None:
    import json

    from tests.result_schema import SCHEMA_PATH

    schema = json.loads(SCHEMA_PATH.read_text())
    described = schema["$defs"]["video"]["properties"]["annotated_key"]["description"]
    assert "_long/" in described and "sha256" in described and "_long/" in schema["description"]
    fallback = f"results/_long/{'0' * 64}.annotated.mp4"
    assert schema_errors({**CLIP_OK, "annotated_key": fallback}) == []
