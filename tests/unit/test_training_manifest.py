"""The manifest training writes and the manifest the function reads are one schema (shared.manifest)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pytest

from shared import bundle
from shared.backbones import get_backbone
from shared.errors import BundleIncompatibleError
from shared.manifest import ManifestDoc, problems
from training import fit, head_input
from training.cli import config_from_args
from training.dataset import Dataset, Item
from training.features import ExtractionStats
from training.head import cross_validate
from training.keras_backbone import resolve_weights

pytestmark = pytest.mark.training  # scikit-learn and LightGBM: not in the function's runtime


def _training_manifest(tmp_path: Path) -> tuple[Path, bundle.Manifest]:
    """What fit writes, from its own functions, on a small synthetic dataset (no TensorFlow)."""
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 20)
    X = rng.normal(size=(40, 8)).astype(np.float32)
    X[:, 0] += 3 * y
    items = tuple(Item(f"train/{'ab'[k]}/{i}.jpg", "ab"[k], f"e{i}", 10, f"train/{i}") for i, k in enumerate(y))
    dataset = Dataset("bucket", "train/", items, ("a", "b"), 0)
    config = config_from_args(["--bucket", "bucket", "--weights", "random"], {})
    spec = get_backbone("mobilenet_v2")
    choice = resolve_weights(spec, "random", home=tmp_path, seed=1)
    cv = cross_validate(X, y, n_classes=2, positive=1, folds=4, seed=1)
    rep = fit._report(config, dataset, spec, choice, cv, ExtractionStats(), 0, [], "v1", "b")
    rep |= {"head_input": head_input.describe("pooled", 1280), "onnx_cache": None, "backbone_from_cache": False,
            "promotion": None}
    parity = {"backbone": {"features_ok": True}, "head": {"probabilities_ok": True}}
    clock = lambda: dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)  # noqa: E731
    doc = fit._manifest(rep, spec, choice, (False, parity), clock)
    folder = tmp_path / "bundle"
    folder.mkdir()
    for name in bundle.REQUIRED_FILES:
        (folder / name).write_bytes(b"onnx")
    manifest, _ = bundle.write_manifest(folder, doc, complete=True)  # the writer's check: every field
    return folder, manifest


def test_what_training_writes_is_what_the_function_reads(tmp_path: Path) -> None:
    folder, written = _training_manifest(tmp_path)
    raw = json.loads((folder / bundle.MANIFEST).read_text())
    assert problems(raw, complete=True) == []
    read = bundle.verify_dir(folder)  # the reader's check
    assert read.raw == written.raw
    assert (read.version, read.classes, read.positive_class) == ("v1", ["a", "b"], "b")
    assert read.threshold == raw["threshold"] == raw["threshold_choice"]["value"]
    assert read.input_size == (224, 224) and read.backbone_name == "mobilenet_v2"
    assert read.weights_source == "random" and read.has_imagenet_top is False
    # Every field training writes is declared in the schema, and every declared field is written.
    assert set(raw) == set(ManifestDoc.__annotations__)


def test_a_manifest_off_the_schema_is_refused_on_both_sides(tmp_path: Path) -> None:
    folder, _ = _training_manifest(tmp_path)
    raw = json.loads((folder / bundle.MANIFEST).read_text())
    with pytest.raises(BundleIncompatibleError, match="threshold"):
        bundle.check_manifest({**raw, "threshold": "0.4"}, where="here")
    del raw["threshold_choice"]
    with pytest.raises(BundleIncompatibleError, match="threshold_choice is missing"):
        bundle.write_manifest(folder, raw, complete=True)
