"""Test doubles: a real, tiny model bundle built without TensorFlow, and event builders.

The tiny backbone averages each colour channel over the frame (``features`` =
mean R, G, B in [0, 1] and brightness); the head scores class 1 by "redness", so a
mostly red frame is class 1 (``car`` by default) and a grey or blue one class 0.
"""

from __future__ import annotations

import copy
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus

import numpy as np

from functions.classify import load_classifier
from shared.bundle import Manifest, promote, sha256_file, upload_bundle, write_manifest
from shared.config import FunctionSettings
from shared.runtime import Classifier
from shared.storage import ObjectStore
from tests import onnx_proto

OPSET = 17
IR_VERSION = 8  # opset 17 needs IR 8; every onnxruntime since 1.13 reads it
FEATURE_DIM = 4
IMAGENET_CLASSES = ("tabby", "sports car", "school bus", "traffic light", "street sign")
EVENTS_DIR = Path(__file__).parent / "events"


def _backbone(input_size: tuple[int, int], with_top: bool) -> bytes:
    width, height = input_size
    # features = [r, g, b, (r + g + b) / 3], each a channel mean scaled to [0, 1].
    proj = np.array([[1, 0, 0, 1 / 3], [0, 1, 0, 1 / 3], [0, 0, 1, 1 / 3]], dtype=np.float32)
    nodes = [
        onnx_proto.node("Cast", ["image"], ["pixels"], to=onnx_proto.FLOAT),
        onnx_proto.node("ReduceMean", ["pixels"], ["means"], axes=[1, 2], keepdims=0),
        onnx_proto.node("Div", ["means", "scale"], ["unit"]),
        onnx_proto.node("MatMul", ["unit", "proj"], ["features"]),
    ]
    inits = [onnx_proto.tensor(np.array(255.0, dtype=np.float32), "scale"), onnx_proto.tensor(proj, "proj")]
    outputs = [onnx_proto.value_info("features", onnx_proto.FLOAT, ["N", FEATURE_DIM])]
    if with_top:
        top = np.zeros((FEATURE_DIM, len(IMAGENET_CLASSES)), dtype=np.float32)
        top[0, 1], top[2, 2], top[3, 3] = 8.0, 8.0, 2.0  # red -> "sports car", blue -> "school bus"
        nodes += [onnx_proto.node("MatMul", ["features", "top"], ["top_logits"]),
                  onnx_proto.node("Softmax", ["top_logits"], ["imagenet_probs"], axis=-1)]
        inits.append(onnx_proto.tensor(top, "top"))
        outputs.append(onnx_proto.value_info("imagenet_probs", onnx_proto.FLOAT, ["N", len(IMAGENET_CLASSES)]))
    image = onnx_proto.value_info("image", onnx_proto.UINT8, ["N", height, width, 3])
    return _model(onnx_proto.graph(nodes, "tiny_backbone", [image], outputs, inits))


def _head(n_classes: int) -> bytes:
    weights = np.zeros((FEATURE_DIM, n_classes), dtype=np.float32)
    bias = np.zeros(n_classes, dtype=np.float32)
    weights[:3, 1], bias[1] = [20.0, -10.0, -10.0], -2.0  # class 1: red
    if n_classes > 2:
        weights[:3, 2], bias[2] = [-10.0, -10.0, 20.0], -2.0  # class 2: blue
    nodes = [onnx_proto.node("MatMul", ["features", "w"], ["xw"]),
             onnx_proto.node("Add", ["xw", "b"], ["logits"]),
             onnx_proto.node("Softmax", ["logits"], ["probabilities"], axis=-1)]
    graph = onnx_proto.graph(
        nodes, "tiny_head",
        [onnx_proto.value_info("features", onnx_proto.FLOAT, ["N", FEATURE_DIM])],
        [onnx_proto.value_info("probabilities", onnx_proto.FLOAT, ["N", n_classes])],
        [onnx_proto.tensor(weights, "w"), onnx_proto.tensor(bias, "b")])
    return _model(graph)


def _model(graph: bytes) -> bytes:
    return onnx_proto.model(graph, opset=OPSET, ir_version=IR_VERSION, producer="tests.fakes")


def build_tiny_bundle(bundle_dir: str | Path, classes: tuple[str, ...] = ("bus", "car"),
                      positive: str | None = "car", threshold: float | None = 0.5, with_top: bool = False,
                      input_size: tuple[int, int] = (32, 32), version: str = "tiny-v1") -> Manifest:
    """Write a complete, valid bundle (ONNX graphs and manifest) into ``bundle_dir``."""
    bundle_dir = Path(bundle_dir)
    bundle_dir.mkdir(parents=True, exist_ok=True)
    (bundle_dir / "backbone.onnx").write_bytes(_backbone(input_size, with_top))
    (bundle_dir / "head.onnx").write_bytes(_head(len(classes)))
    if with_top:
        (bundle_dir / "imagenet_classes.json").write_text(json.dumps(list(IMAGENET_CLASSES)))
    manifest, _ = write_manifest(bundle_dir, {
        "version": version,
        "created_at": "2024-05-01T12:00:00Z",
        "backbone": {"name": "tiny_mean_rgb", "input_size": list(input_size), "feature_dim": FEATURE_DIM,
                     "preprocessing": {"mode": "none", "scale": 1 / 255, "mean": [0, 0, 0], "channel_order": "RGB"},
                     "weights": {"source": "synthetic"}, "has_imagenet_top": with_top},
        "classes": list(classes),
        "positive_class": positive,
        "threshold": threshold,
        "metrics": {}, "dataset": {}, "versions": {},
    })
    return manifest


def publish_bundle(store: ObjectStore, bundle_dir: str | Path, model_prefix: str = "models/") -> str:
    """Upload a bundle and point ``latest.json`` at it, as training does; return its version."""
    bundle_dir = Path(bundle_dir)
    raw = json.loads((bundle_dir / "manifest.json").read_text())
    upload_bundle(store, bundle_dir, model_prefix, raw["version"])
    promote(store, model_prefix, raw["version"], sha256_file(bundle_dir / "manifest.json"), raw["created_at"])
    return str(raw["version"])


# -- events -------------------------------------------------------------------------


def load_event(name: str) -> dict[str, Any]:
    """A real-shape event from ``tests/events/<name>.json``."""
    return json.loads((EVENTS_DIR / f"{name}.json").read_text(encoding="utf-8"))


def s3_event(bucket: str, keys: list[str], *, etags: list[str | None] | None = None) -> dict[str, Any]:
    """The documented S3 notification, one record per key (keys encoded as S3 does)."""
    template = load_event("s3_put")["Records"][0]
    records = []
    for i, key in enumerate(keys):
        record = copy.deepcopy(template)
        record["s3"]["bucket"].update(name=bucket, arn=f"arn:aws:s3:::{bucket}")
        record["s3"]["object"]["key"] = quote_plus(key, safe="/")
        record["s3"]["object"].pop("versionId", None)  # test buckets are not versioned
        etag = etags[i] if etags else None
        if etag is None:
            record["s3"]["object"].pop("eTag", None)
            record["s3"]["object"].pop("size", None)
        else:
            record["s3"]["object"]["eTag"] = etag
        records.append(record)
    return {"Records": records}


def sqs_event(bucket: str, keys: list[str], *, bodies: dict[int, str] | None = None) -> dict[str, Any]:
    """An SQS batch, one S3 notification per message; ``bodies`` overrides some raw bodies."""
    template = load_event("sqs_s3_put")["Records"][0]
    records = []
    for i, key in enumerate(keys):
        record = copy.deepcopy(template)
        record["messageId"] = f"msg-{i:04d}"
        record["body"] = (bodies or {}).get(i) or json.dumps(s3_event(bucket, [key]))
        records.append(record)
    return {"Records": records}


def eventbridge_event(bucket: str, key: str) -> dict[str, Any]:
    event = load_event("eventbridge_object_created")
    event["resources"] = [f"arn:aws:s3:::{bucket}"]
    event["detail"]["bucket"]["name"] = bucket
    event["detail"]["object"]["key"] = key  # EventBridge does not encode keys
    for field in ("etag", "size", "version-id"):
        event["detail"]["object"].pop(field, None)
    return event


def yandex_event(bucket: str, keys: list[str]) -> dict[str, Any]:
    template = load_event("yandex_object_create")["messages"][0]
    messages = []
    for key in keys:
        message = copy.deepcopy(template)
        message["details"].update(bucket_id=bucket, object_id=key)
        messages.append(message)
    return {"messages": messages}


class TickingClock:
    """A clock that moves one second per reading, so a rewritten result would show it."""

    def __init__(self) -> None:
        self.now = datetime(2024, 6, 1, 10, 0, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        moment, self.now = self.now, self.now + timedelta(seconds=1)
        return moment


class CountingLoader:
    """The real model loader, counting its calls (the model must load once per container)."""

    def __init__(self, settings: FunctionSettings) -> None:
        self.settings = settings
        self.calls = 0

    def __call__(self, store: ObjectStore) -> Classifier:
        self.calls += 1
        return load_classifier(store, self.settings)
