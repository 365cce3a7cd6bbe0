"""Inference on a verified bundle with onnxruntime: no TensorFlow, LightGBM or sklearn.

The backbone graph takes uint8 RGB ``(N, H, W, 3)`` (its preprocessing is inside the
graph) and gives ``features`` and, when the bundle has ImageNet top weights,
``imagenet_probs``.  The head takes ``features`` and gives ``probabilities``.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import json
import sys
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from shared.bundle import IMAGENET_CLASSES, Manifest, verify_dir
from shared.decision import decide as decide  # the one labelling rule, re-exported for callers
from shared.tensors import FEATURES, HEAD_INPUT, HEAD_PROBABILITIES, IMAGENET_PROBS


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
    # Pre-planned activation buffers (the "memory pattern") cost ResNet50 ~70 MB at a batch
    # of 10 and bought no speed on either backbone (`make bench`); the arena still reuses memory.
    opts.enable_mem_pattern = False
    # Intra-op threads spin while a run is on (fast hand-offs between the graph's ~60
    # parallel kernels) and stop when it ends, so between frames they do not steal the core
    # the decoder needs (`make bench`: warm p50 below both "always spin" and "never spin").
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1")
    opts.add_session_config_entry("session.force_spinning_stop", "1")
    return opts


@dataclasses.dataclass(frozen=True)
class _Sessions:
    backbone: Any
    head: Any
    backbone_input: str
    want: list[str]
    imagenet_classes: list[str] | None


def open_sessions(bundle_dir: Path, manifest: Manifest, threads: int | None = None) -> _Sessions:
    """Open the backbone and head sessions side by side (onnxruntime releases the GIL while it builds)."""
    import onnxruntime as ort

    opts = session_options(threads)
    providers = ["CPUExecutionProvider"]
    with ThreadPoolExecutor(max_workers=1) as pool:
        head = pool.submit(ort.InferenceSession, str(bundle_dir / "head.onnx"), opts, providers=providers)
        backbone = ort.InferenceSession(str(bundle_dir / "backbone.onnx"), opts, providers=providers)
    outputs = [o.name for o in backbone.get_outputs()]
    want = [FEATURES] + ([IMAGENET_PROBS] if IMAGENET_PROBS in outputs and manifest.has_imagenet_top else [])
    path = bundle_dir / IMAGENET_CLASSES
    classes = list(json.loads(path.read_text())) if len(want) > 1 and path.is_file() else None
    sessions = _Sessions(backbone, head.result(), backbone.get_inputs()[0].name, want, classes)
    _return_free_heap()
    return sessions


def _return_free_heap() -> None:
    """Give the OS back the heap that building the sessions used and freed (glibc only).

    onnxruntime parses the model and transforms its weights in temporary buffers; glibc
    keeps the freed pages, so a 98 MB ResNet50 left the process 130 MB larger than it
    needed to be for as long as it ran.
    """
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)


class Classifier:
    """A loaded bundle. Build it once per process and reuse it for every frame.

    ``manifest`` (classes, input size, version) is there at once.  The sessions are either
    opened in the constructor or, with :meth:`in_background`, on a thread while the caller
    downloads and decodes its frames; whatever needs them waits for them.
    """

    def __init__(self, bundle_dir: Path, manifest: Manifest, *, threads: int | None = None) -> None:
        self.manifest = manifest
        self._sessions: Future[_Sessions] = Future()
        self._sessions.set_result(open_sessions(bundle_dir, manifest, threads))

    @classmethod
    def from_dir(cls, bundle_dir: Path, *, threads: int | None = None,
                 manifest_sha256: str | None = None) -> Classifier:
        return cls(bundle_dir, verify_dir(bundle_dir, manifest_sha256=manifest_sha256), threads=threads)

    @classmethod
    def in_background(cls, manifest: Manifest, files: Callable[[], Path], *,
                      threads: int | None = None) -> Classifier:
        """Start ``files()`` (which returns the bundle folder) and the sessions on a thread.

        If that fails, the methods that need the sessions raise its error, and
        :attr:`failed` becomes true so the owner can load again.
        """
        sessions: Future[_Sessions] = Future()

        def load() -> None:
            try:
                sessions.set_result(open_sessions(files(), manifest, threads))
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits on the sessions
                sessions.set_exception(exc)

        # Not a daemon: at exit the interpreter waits for it.  A daemon thread still inside
        # onnxruntime's session constructor when the process exits (a handler call whose records
        # were all skipped returns before the load ends) aborts it: "terminate called without an
        # active exception" from a C++ thread destroyed while still joinable.
        threading.Thread(target=load, name="model-load", daemon=False).start()
        return cls._with(manifest, sessions)

    @classmethod
    def _with(cls, manifest: Manifest, sessions: Future[_Sessions]) -> Classifier:
        clf = cls.__new__(cls)  # __init__ opens the sessions itself; these are on their way
        clf.manifest, clf._sessions = manifest, sessions
        return clf

    @property
    def failed(self) -> bool:
        """Whether loading in the background failed (the classifier is then unusable)."""
        return self._sessions.done() and self._sessions.exception() is not None

    def wait(self) -> Classifier:
        """Block until the sessions are open; raise the loading error if there was one."""
        self._sessions.result()
        return self

    @property
    def imagenet_classes(self) -> list[str] | None:
        return self._sessions.result().imagenet_classes

    @property
    def input_size(self) -> tuple[int, int]:
        return self.manifest.input_size

    def features(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        sessions = self._sessions.result()
        outs = sessions.backbone.run(sessions.want, {sessions.backbone_input: images})
        return outs[0], (outs[1] if len(outs) > 1 else None)

    def head_probabilities(self, features: np.ndarray) -> np.ndarray:
        head = self._sessions.result().head
        feeds = {HEAD_INPUT: features.astype(np.float32, copy=False)}
        probabilities: np.ndarray = head.run([HEAD_PROBABILITIES], feeds)[0]
        return probabilities

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
        classes = self.imagenet_classes
        if imagenet is not None and classes is not None:
            order = np.argsort(-imagenet)[:top_k]
            top = [{"class": classes[j], "probability": round(float(imagenet[j]), 6)} for j in order]
        return Prediction(
            label=m.classes[idx],
            probability=round(float(probs[idx]), 6),
            probabilities={c: round(float(p), 6) for c, p in zip(m.classes, probs, strict=True)},
            threshold=m.threshold,
            imagenet_top=top,
        )
