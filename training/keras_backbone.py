"""Build a registry backbone in Keras, with its preprocessing inside the graph.

The model takes uint8 RGB ``(N, H, W, 3)`` and returns ``[features]`` or
``[features, imagenet_probs]`` when ImageNet top weights are loaded.  TensorFlow is
imported only inside functions, so ``--help`` and input validation stay fast.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from shared.backbones import BackboneSpec
from shared.bundle import sha256_file
from shared.errors import ConfigError, WeightsNotFoundError
from training import head_input as head_inputs

WEIGHTS_CHOICES = "imagenet (the Keras cache), PATH to a local .h5 file, or random (smoke runs only)"


@dataclasses.dataclass(frozen=True)
class WeightsChoice:
    source: str  # "imagenet", "file" or "random"
    path: Path | None
    include_top: bool
    identity: str

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "file": self.path.name if self.path else None,
                "include_top": self.include_top, "identity": self.identity,
                "note": "random weights: smoke run only, not a useful model" if self.source == "random" else None}


def keras_home(env: Mapping[str, str]) -> Path:
    """Keras' own cache folder rule: $KERAS_HOME, else ~/.keras."""
    return Path(env.get("KERAS_HOME") or Path.home() / ".keras")


Downloader = Callable[[BackboneSpec, Path], tuple[Path, bool]]


def resolve_weights(spec: BackboneSpec, weights: str, *, home: Path, seed: int,
                    downloader: Downloader | None = None) -> WeightsChoice:
    """Decide which weights to load, before any TensorFlow import, and fail early if absent.

    ImageNet weights missing from the Keras cache are downloaded into it with Keras' own
    downloader (``training.weights_download``; ``downloader`` replaces it in tests).
    """
    if weights == "random":
        return WeightsChoice("random", None, False, f"random-seed-{seed}")
    if weights == "imagenet":
        return _imagenet_choice(spec, home, downloader or _download)
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ConfigError(f"--weights {weights!r} is not a file; pass {WEIGHTS_CHOICES}.", weights=weights)
    if path.suffix.lower() not in {".h5", ".keras", ".weights.h5"}:
        raise ConfigError(f"--weights {weights!r} should be a Keras .h5 weights file.", weights=weights)
    return WeightsChoice("file", path.resolve(), _looks_like_top(path), sha256_file(path))


def _looks_like_top(path: Path) -> bool:
    name = path.name.lower()
    return not ("no_top" in name or "notop" in name)


def _download(spec: BackboneSpec, home: Path) -> tuple[Path, bool]:
    from training.weights_download import download

    return download(spec, home)


def _imagenet_choice(spec: BackboneSpec, home: Path, downloader: Downloader) -> WeightsChoice:
    models = home / "models"
    top, notop = models / spec.weights_file_top, models / spec.weights_file_notop
    if top.is_file():
        return WeightsChoice("imagenet", top, True, sha256_file(top))
    if notop.is_file():
        return WeightsChoice("imagenet", notop, False, sha256_file(notop))
    # Progress on stdout: stderr holds nothing but the one-line error if this fails.
    print(f"weights: downloading the {spec.keras_application} ImageNet weights into {models} (Keras' downloader)",
          flush=True)
    try:
        path, hash_checked = downloader(spec, home)
    except Exception as exc:  # noqa: BLE001 - any failure ends in the one message below
        raise WeightsNotFoundError(
            f"The {spec.keras_application} ImageNet weights are not in the Keras cache: {notop} is missing "
            f"(cache folder {models}, set by KERAS_HOME) and they cannot be downloaded here ({exc}). Put the "
            f"file there, or pass --weights {WEIGHTS_CHOICES}.", path=str(notop), cache=str(models)) from None
    print(f"weights: downloaded {path.name}" + ("" if hash_checked else
          " (Keras publishes no hash for it; its sha256 identifies it in the manifest)") + ".", flush=True)
    return WeightsChoice("imagenet", path, _looks_like_top(path), sha256_file(path))


def build_model(spec: BackboneSpec, choice: WeightsChoice, *, seed: int, head_input: str = head_inputs.POOLED) -> Any:
    """A Keras model from uint8 RGB to [features] or [features, imagenet_probs].

    ``features`` is what the head reads: the pooled features, or (``imagenet_groups``)
    the logged and grouped ImageNet probabilities of ``training.head_input``.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    keras.utils.set_random_seed(seed)
    base = _application(spec, choice)
    width, height = spec.input_size
    image = keras.Input((height, width, 3), dtype="uint8", name="image")
    outputs = base(_preprocess(keras, image, spec))
    outputs = list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]
    if head_input == head_inputs.IMAGENET_GROUPS:
        if len(outputs) < 2:
            raise ConfigError("--head-input imagenet_groups needs ImageNet weights with their top; use "
                              "--head-input pooled.")
        outputs[0] = head_inputs.keras_features(keras, outputs[1])
    return keras.Model(image, outputs, name=f"{spec.name}_uint8")


def feature_function(model: Any, spec: BackboneSpec) -> Callable[[np.ndarray], np.ndarray]:
    """The model's features for a uint8 batch of any size, traced once.

    ``model.predict_on_batch`` traces the graph again for each new batch size until it
    generalises (about 1 s for MobileNetV2 on 2 cores, paid on the last, partial batch of
    every run); a ``tf.function`` whose batch dimension is ``None`` is traced once.  Same
    graph, same values.
    """
    import tensorflow as tf

    width, height = spec.input_size

    @tf.function(input_signature=[tf.TensorSpec([None, height, width, 3], tf.uint8)])
    def features(batch: Any) -> Any:
        out = model(batch, training=False)
        return out[0] if isinstance(out, (list, tuple)) else out

    return lambda batch: features(tf.convert_to_tensor(batch)).numpy()


def _application(spec: BackboneSpec, choice: WeightsChoice) -> Any:
    import keras

    app = getattr(keras.applications, spec.keras_application)
    width, height = spec.input_size
    weights = {"imagenet": "imagenet", "random": None}.get(choice.source, str(choice.path))
    try:
        if not choice.include_top:
            return app(include_top=False, weights=weights, input_shape=(height, width, 3), pooling="avg")
        full = app(include_top=True, weights=weights, input_shape=(height, width, 3))
    except (ValueError, OSError) as exc:
        raise ConfigError(f"Could not load {spec.keras_application} weights from {choice.path or weights} ({exc}); "
                          f"pass {WEIGHTS_CHOICES}.", weights=str(choice.path)) from None
    pooled = [layer for layer in full.layers if isinstance(layer, keras.layers.GlobalAveragePooling2D)][-1]
    return keras.Model(full.input, [pooled.output, full.output], name=f"{spec.name}_backbone")


def _preprocess(keras: Any, image: Any, spec: BackboneSpec) -> Any:
    p = spec.preprocessing
    x = keras.ops.cast(image, "float32")
    if p.channel_order == "BGR":
        x = keras.ops.flip(x, axis=-1)
    # A per-channel constant broadcast over NHWC costs onnxruntime ~0.8 ms a MobileNetV2 frame
    # (10% of the backbone); a scalar, when the channels share one mean, costs nothing and
    # gives bit-identical values.
    uniform = len(set(p.mean)) == 1
    mean = keras.ops.convert_to_tensor(p.mean[0] if uniform else p.mean, dtype="float32")
    return (x - mean) * p.scale
