"""The backbone registry. Each entry carries its own input size and preprocessing.

This module holds descriptions only; ``training.keras_backbone`` builds the Keras
models from them, so the function can read the registry without TensorFlow.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from shared.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """What the model graph does to uint8 RGB before the first convolution.

    ``x = (x[..., channel_order] - mean) * scale``, computed in float32.
    """

    mode: str
    scale: float
    mean: tuple[float, float, float]
    channel_order: str  # "RGB" or "BGR"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class BackboneSpec:
    name: str
    keras_application: str
    input_size: tuple[int, int]  # (width, height)
    feature_dim: int
    preprocessing: Preprocessing
    weights_file_top: str
    weights_file_notop: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "keras_application": self.keras_application,
            "input_size": list(self.input_size),
            "feature_dim": self.feature_dim,
            "preprocessing": self.preprocessing.to_dict(),
        }


_REGISTRY: dict[str, BackboneSpec] = {}


def register(spec: BackboneSpec) -> BackboneSpec:
    _REGISTRY[spec.name] = spec
    return spec


def get_backbone(name: str) -> BackboneSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"Unknown backbone {name!r}; choose one of: {', '.join(sorted(_REGISTRY))}.",
                          backbone=name) from None


def backbone_names() -> list[str]:
    return sorted(_REGISTRY)


register(BackboneSpec(
    name="mobilenet_v2",
    keras_application="MobileNetV2",
    input_size=(224, 224),
    feature_dim=1280,
    # keras.applications.mobilenet_v2.preprocess_input: scale to [-1, 1].
    preprocessing=Preprocessing(mode="tf", scale=1 / 127.5, mean=(127.5, 127.5, 127.5), channel_order="RGB"),
    weights_file_top="mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5",
    weights_file_notop="mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5",
))

register(BackboneSpec(
    name="resnet50",
    keras_application="ResNet50",
    input_size=(224, 224),
    feature_dim=2048,
    # keras.applications.resnet50.preprocess_input ("caffe"): BGR, ImageNet means, no scaling.
    preprocessing=Preprocessing(mode="caffe", scale=1.0, mean=(103.939, 116.779, 123.68), channel_order="BGR"),
    weights_file_top="resnet50_weights_tf_dim_ordering_tf_kernels.h5",
    weights_file_notop="resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
))
