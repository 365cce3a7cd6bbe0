"""shared.runtime: the classifier over onnxruntime, opened at once or in the background."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from shared.bundle import verify_dir
from shared.errors import BundleIntegrityError
from shared.runtime import Classifier, decide, session_options
from tests.fakes import build_tiny_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-runtime")
    build_tiny_bundle(folder, with_top=True)
    return folder


def frames(*colours: tuple[int, int, int]) -> np.ndarray:
    return np.stack([np.full((32, 32, 3), colour, dtype=np.uint8) for colour in colours])


def test_background_load_gives_the_same_predictions(bundle: Path) -> None:
    now = Classifier.from_dir(bundle)
    release = threading.Event()

    def files() -> Path:
        release.wait(10)
        return bundle

    later = Classifier.in_background(verify_dir(bundle), files)
    # The manifest is usable before the sessions exist (the service decodes meanwhile).
    assert later.input_size == (32, 32) and later.manifest.version == "tiny-v1"
    assert not later.failed
    release.set()
    batch = frames((250, 10, 10), (10, 10, 250))
    assert later.predict(batch) == now.predict(batch)
    assert later.wait() is later and not later.failed


def test_background_load_failure_is_raised_where_the_model_is_used(bundle: Path) -> None:
    def files() -> Path:
        raise BundleIntegrityError("s3://b/models/v/head.onnx does not match its sha256 in the manifest; "
                                   "retrain or restore it.", bucket="b", key="models/v/head.onnx")

    clf = Classifier.in_background(verify_dir(bundle), files)
    with pytest.raises(BundleIntegrityError, match="head.onnx"):
        clf.predict(frames((1, 2, 3)))
    assert clf.failed  # its owner (functions.classify.App) then loads again
    with pytest.raises(BundleIntegrityError):
        clf.wait()


def test_threshold_decides_binary_heads_and_argmax_the_rest() -> None:
    probs = np.array([0.7, 0.3])
    assert decide(probs, ["bus", "car"], "car", 0.25) == 1  # above the car threshold
    assert decide(probs, ["bus", "car"], "car", 0.35) == 0
    assert decide(probs, ["bus", "car"], None, None) == 0
    assert decide(np.array([0.2, 0.5, 0.3]), ["a", "b", "c"], "a", 0.1) == 1  # not binary: argmax


def test_idle_threads_do_not_spin_between_runs() -> None:
    entries = session_options().get_session_config_entry
    # Spinning only while a run is on: between frames the decoder gets the core.
    assert entries("session.force_spinning_stop") == "1"
