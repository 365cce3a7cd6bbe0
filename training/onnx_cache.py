"""The exported ONNX backbone, cached in the bucket with its parity already measured.

On a re-run with unchanged data every feature comes from the feature cache, yet importing
TensorFlow, building the Keras model, exporting it with tf2onnx and measuring parity took
about 25 s of a 34 s run.  None of that changes unless the backbone, its weights, the head
input or the exporter does, so the exported graph is kept under
``<prefix><key>/`` (``backbone.onnx``, ``backbone.onnx.data``, ``meta.json``), ``key`` being a
hash of exactly those things.  A run that finds it needs no TensorFlow at all: new frames
are featurised with onnxruntime on the cached graph, which parity showed equal to Keras.
Every file is checked against the sha256 in ``meta.json``; a damaged entry is ignored and
replaced.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from shared.backbones import BackboneSpec
from shared.bundle import BACKBONE_WEIGHTS, dump_json, sha256_bytes, sha256_file
from shared.errors import ObjectNotFoundError
from shared.runtime import session_options
from shared.storage import ObjectStore
from shared.tensors import FEATURES
from training import head_input as head_inputs
from training.export import BACKBONE_OPSET

FILES = ("backbone.onnx", BACKBONE_WEIGHTS)
META = "meta.json"
EXPORTER_PACKAGES = ("tensorflow", "tensorflow-cpu", "keras", "tf2onnx", "onnx")


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def cache_key(spec: BackboneSpec, weights_identity: str, head_input: str) -> str:
    """Everything the exported graph depends on, hashed."""
    ident = {"backbone": spec.to_dict(), "weights": weights_identity, "head_input": head_input,
             "head_input_version": head_inputs.VERSION if head_input != head_inputs.POOLED else None,
             "opset": BACKBONE_OPSET, "exporter": {name: _version(name) for name in EXPORTER_PACKAGES}}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:24]


class OnnxCache:
    def __init__(self, store: ObjectStore, prefix: str, key: str) -> None:
        self.store = store
        self.key = key
        self.prefix = f"{prefix}{key}/"

    def fetch(self, folder: Path) -> dict[str, Any] | None:
        """Download the cached backbone into ``folder``; its meta (parity, outputs), or None on a miss."""
        try:
            meta = json.loads(self.store.get(self.prefix + META).body)
            for name in FILES:
                data = self.store.get(self.prefix + name).body
                if sha256_bytes(data) != meta["files"][name]:
                    return None  # damaged: export again, and the put below replaces it
                (folder / name).write_bytes(data)
        except (ObjectNotFoundError, ValueError, KeyError, TypeError):
            return None
        return dict(meta)

    def put(self, folder: Path, *, has_top: bool, parity: dict[str, Any]) -> None:
        """Store the freshly exported backbone in ``folder``; meta last, so a half-written entry is a miss."""
        files = {name: sha256_file(folder / name) for name in FILES}
        for name in FILES:
            self.store.put(self.prefix + name, (folder / name).read_bytes())
        meta = {"key": self.key, "has_top": has_top, "parity": parity, "files": files}
        self.store.put(self.prefix + META, dump_json(meta), content_type="application/json")


def onnx_features(path: Path) -> Callable[[np.ndarray], np.ndarray]:
    """Features of a uint8 batch from the exported backbone, with onnxruntime (no TensorFlow)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), session_options(), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda batch: sess.run([FEATURES], {name: batch})[0]
