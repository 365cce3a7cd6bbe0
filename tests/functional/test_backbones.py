"""Keras backbones: weight resolution and loading, without a training run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from shared.backbones import get_backbone
from shared.errors import ConfigError, WeightsNotFoundError
from training.keras_backbone import build_model, resolve_weights

pytestmark = pytest.mark.training  # scikit-learn, LightGBM, TensorFlow: not in the function's runtime

SPEC = get_backbone("mobilenet_v2")


def test_missing_imagenet_weights_name_the_file_and_choices(tmp_path: Path) -> None:
    with pytest.raises(WeightsNotFoundError) as info:
        resolve_weights(SPEC, "imagenet", home=tmp_path, seed=0)
    message = str(info.value)
    assert SPEC.weights_file_notop in message and str(tmp_path / "models") in message
    assert "--weights" in message and "random" in message


def test_weights_path_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is not a file"):
        resolve_weights(SPEC, str(tmp_path / "nope.h5"), home=tmp_path, seed=0)


def test_random_weights_are_seeded_and_marked(tmp_path: Path) -> None:
    a = resolve_weights(SPEC, "random", home=tmp_path, seed=3)
    assert a.source == "random" and a.identity == "random-seed-3" and "smoke" in a.to_dict()["note"]
    images = np.random.default_rng(0).integers(0, 255, (2, 224, 224, 3), dtype=np.uint8)
    f1 = build_model(SPEC, a, seed=3).predict_on_batch(images)
    f2 = build_model(SPEC, a, seed=3).predict_on_batch(images)
    f1 = f1[0] if isinstance(f1, (list, tuple)) else f1
    f2 = f2[0] if isinstance(f2, (list, tuple)) else f2
    assert f1.shape == (2, 1280) and np.array_equal(f1, f2)


@pytest.mark.kit
def test_local_weights_file_with_and_without_top(imagenet_keras_home: Path) -> None:
    images = np.random.default_rng(0).integers(0, 255, (2, 224, 224, 3), dtype=np.uint8)
    notop = resolve_weights(SPEC, str(imagenet_keras_home / "models" / SPEC.weights_file_notop),
                            home=Path("/nonexistent"), seed=0)
    assert notop.source == "file" and not notop.include_top and len(notop.identity) == 64
    out = build_model(SPEC, notop, seed=0).predict_on_batch(images)
    assert np.asarray(out[0] if isinstance(out, (list, tuple)) else out).shape == (2, 1280)
    top = resolve_weights(SPEC, str(imagenet_keras_home / "models" / SPEC.weights_file_top),
                          home=Path("/nonexistent"), seed=0)
    feats, probs = build_model(SPEC, top, seed=0).predict_on_batch(images)
    assert feats.shape == (2, 1280) and probs.shape == (2, 1000)
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-4)
    # The same pooled features come out of either file (the kit's two files share their conv weights).
    assert np.allclose(feats, np.asarray(out[0] if isinstance(out, (list, tuple)) else out), atol=1e-3)
