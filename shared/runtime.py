"""Inference on a verified bundle with onnxruntime: no TensorFlow, LightGBM or sklearn.

The backbone graph takes uint8 RGB ``(N, H, W, 3)`` (its preprocessing is inside the
graph) and gives ``features`` and, when the bundle has ImageNet top weights,
``imagenet_probs``.  The head takes ``features`` and gives ``probabilities``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np

from shared.bundle import Manifest, verify_dir

FEATURES = "features"
IMAGENET_PROBS = "imagenet_probs"
HEAD_INPUT = "features"
HEAD_PROBABILITIES = "probabilities"


@dataclasses.dataclass(frozen=True)
class Prediction:
    label: str
    probability: float
    probabilities: dict[str, float]
    threshold: float | None
    imagenet_top: list[dict[str, Any]] | None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def session_options(threads: int | None = None) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.inter_op_num_threads = 1
    if threads:
        opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    # Idle intra-op threads busy-wait by default; between frames that steals the core the
    # decoder needs (warm p50 19-51 -> 16-18.5 ms measured by `make bench`, same outputs).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return opts


def decide(probs: np.ndarray, classes: list[str], positive: str | None, threshold: float | None) -> int:
    """Index of the predicted class: thresholded for a binary head, argmax otherwise."""
    if positive is not None and threshold is not None and len(classes) == 2:
        pos = classes.index(positive)
        return pos if probs[pos] >= threshold else 1 - pos
    return int(np.argmax(probs))


class Classifier:
    """A loaded bundle. Build it once per process and reuse it for every frame."""

    def __init__(self, bundle_dir: Path, manifest: Manifest, *, threads: int | None = None) -> None:
        import onnxruntime as ort

        self.bundle_dir = bundle_dir
        self.manifest = manifest
        opts = session_options(threads)
        providers = ["CPUExecutionProvider"]
        self.backbone = ort.InferenceSession(str(bundle_dir / "backbone.onnx"), opts, providers=providers)
        self.head = ort.InferenceSession(str(bundle_dir / "head.onnx"), opts, providers=providers)
        self._backbone_input = self.backbone.get_inputs()[0].name
        outputs = [o.name for o in self.backbone.get_outputs()]
        self._want = [FEATURES] + ([IMAGENET_PROBS] if IMAGENET_PROBS in outputs and manifest.has_imagenet_top
                                   else [])
        self.imagenet_classes = self._load_imagenet_classes()

    @classmethod
    def from_dir(cls, bundle_dir: Path, *, threads: int | None = None,
                 manifest_sha256: str | None = None) -> Classifier:
        return cls(bundle_dir, verify_dir(bundle_dir, manifest_sha256=manifest_sha256), threads=threads)

    def _load_imagenet_classes(self) -> list[str] | None:
        path = self.bundle_dir / "imagenet_classes.json"
        if len(self._want) < 2 or not path.is_file():
            return None
        return list(json.loads(path.read_text()))

    @property
    def input_size(self) -> tuple[int, int]:
        return self.manifest.input_size

    def features(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        outs = self.backbone.run(self._want, {self._backbone_input: images})
        return outs[0], (outs[1] if len(outs) > 1 else None)

    def head_probabilities(self, features: np.ndarray) -> np.ndarray:
        return self.head.run([HEAD_PROBABILITIES], {HEAD_INPUT: features.astype(np.float32, copy=False)})[0]

    def predict(self, images: np.ndarray, *, top_k: int = 3) -> list[Prediction]:
        """Classify a uint8 batch ``(N, H, W, 3)``."""
        if images.ndim != 4 or images.dtype != np.uint8:
            raise ValueError(f"expected a uint8 (N, H, W, 3) batch, got {images.dtype} {images.shape}")
        feats, imagenet = self.features(images)
        probs = self.head_probabilities(feats)
        return [self._prediction(probs[i], None if imagenet is None else imagenet[i], top_k)
                for i in range(len(images))]

    def _prediction(self, probs: np.ndarray, imagenet: np.ndarray | None, top_k: int) -> Prediction:
        m = self.manifest
        idx = decide(probs, m.classes, m.positive_class, m.threshold)
        top = None
        if imagenet is not None and self.imagenet_classes is not None:
            order = np.argsort(-imagenet)[:top_k]
            top = [{"class": self.imagenet_classes[j], "probability": round(float(imagenet[j]), 6)} for j in order]
        return Prediction(
            label=m.classes[idx],
            probability=round(float(probs[idx]), 6),
            probabilities={c: round(float(p), 6) for c, p in zip(m.classes, probs)},
            threshold=m.threshold,
            imagenet_top=top,
        )
