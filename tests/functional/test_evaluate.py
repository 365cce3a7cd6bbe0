"""``training.evaluate`` against a moto bucket: its labels are the labels the function writes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from devstack.samples import jpeg_bytes
from functions.classify import make_handler
from shared.config import DecodeLimits, FunctionSettings, S3Settings
from shared.storage import ObjectStore
from tests.fakes import build_tiny_bundle, publish_bundle, s3_event
from training import evaluate

pytestmark = pytest.mark.training  # scikit-learn and matplotlib: not in the function's runtime
PREFIX = "incoming/eval/"


def _frames() -> list[tuple[str, bytes]]:
    """Frames whose redness (what the tiny head scores) spans the threshold; a few labels disagree with it."""
    frames = []
    for i in range(16):
        red = 60 + i * 8  # logit of car = 20 r - 8 (g = b = 0.3): from -3.3 to +3.8
        label = "car" if (red > 102) != (i in (3, 12)) else "bus"
        image = jpeg_bytes(Image.new("RGB", (96, 64), (red, 77, 77)))
        frames.append((f"{PREFIX}{label}/cam{i % 2}_{i:02d}.jpg", image))
    return frames


@pytest.fixture()
def labelled(store: ObjectStore, tmp_path: Path) -> list[str]:
    build_tiny_bundle(tmp_path / "bundle")
    publish_bundle(store, tmp_path / "bundle")
    keys = []
    for key, data in _frames():
        store.put(key, data, content_type="image/jpeg")
        keys.append(key)
    store.put(f"{PREFIX}car/zz_broken.jpg", b"\xff\xd8\xff\xe0 not a jpeg at all")
    store.put(f"{PREFIX}car/notes.txt", b"not an image")
    return keys + [f"{PREFIX}car/zz_broken.jpg"]


def test_evaluate_labels_equal_the_function_results(labelled: list[str], store: ObjectStore, s3_client: Any,
                                                    s3_settings: S3Settings, moto_server: Any, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    settings = FunctionSettings(model_cache_dir=str(tmp_path / "cache"), s3=s3_settings, max_workers=4,
                                limits=DecodeLimits())
    make_handler(settings, stores=lambda b: ObjectStore(s3_client, b))(s3_event(store.bucket, labelled), None)
    served = {key: store.get_json("results/" + key[len("incoming/"):] + ".json") for key in labelled}

    code = evaluate.main(["--bucket", store.bucket, "--endpoint-url", moto_server.endpoint_url, "--prefix", PREFIX,
                          "--name", "parity", "--camera-regex", r"(cam\d)_", "--out", str(tmp_path / "eval")],
                         env=dict(os.environ))
    out = capsys.readouterr().out
    assert code == 0, out
    version = store.get_json("models/latest.json")["version"]
    ev = store.get_json(f"models/{version}/evaluation/parity/evaluation.json")
    ours = {f["key"]: f for f in ev["frames"]}
    assert set(ours) == {k for k in labelled if "broken" not in k}
    for key, frame in ours.items():
        assert frame["predicted"] == served[key]["label"], key
        assert frame["probabilities"] == served[key]["probabilities"], key
    # The disagreeing labels are the misclassified ones; the broken frame is counted, listed, and did not stop the run.
    assert {f["key"] for f in ev["misclassified"]} == {k for k in ours if ours[k]["label"] != ours[k]["predicted"]}
    assert len(ev["misclassified"]) == 2 and ev["metrics"]["accuracy"] == pytest.approx(14 / 16)
    assert served[f"{PREFIX}car/zz_broken.jpg"]["status"] == "error"
    assert [u["key"] for u in ev["dataset"]["unreadable"]] == [f"{PREFIX}car/zz_broken.jpg"]
    assert ev["dataset"]["skipped_non_image"] == 1
    assert set(ev["cameras"]) == {"cam0", "cam1"} and sum(c["n"] for c in ev["cameras"].values()) == 16
    files = {o.key.rsplit("/", 1)[1] for o in store.list(f"models/{version}/evaluation/parity/")}
    assert {"evaluation.json", "report.md", "roc.png", "calibration.png", "threshold.png", "index.html"} <= files
    assert "| accuracy | precision | recall | f1 | roc_auc | log_loss |" in out and "zz_broken.jpg" in out
    page = (tmp_path / "eval" / "index.html").read_text()
    assert page.count("data:image/jpeg;base64,") >= 2 and "<script" not in page


def test_html_escapes_keys(tmp_path: Path) -> None:
    from training.eval_report import html

    row = {"key": "incoming/<script>alert(1)</script>.jpg", "label": "car", "predicted": "bus",
           "probabilities": {"bus": 0.6, "car": 0.4}, "confidence": 0.1, "camera": "x"}
    ev = {"name": "n", "model": {"version": "v", "where": "w"}, "dataset": {"bucket": "b", "prefix": "p/",
          "n_scored": 1, "unreadable": []}, "metrics": {k: 0.5 for k in ("accuracy", "precision", "recall", "f1",
                                                                          "roc_auc", "log_loss")},
          "misclassified": [row], "least_confident": [row]}
    page = html(ev, {})
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert json.loads(json.dumps(ev))  # plain data in, plain page out


@pytest.mark.kit
@pytest.mark.slow
def test_vehicles_check_carries_over(kit: Path, imagenet_keras_home: Path, moto_server: Any, store: ObjectStore,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 13's goal: trained with the defaults on vehicles-dev alone, vehicles-check through the serving path."""
    import subprocess
    import sys

    from tests.conftest import REPO

    for name, prefix in (("vehicles-dev", "train/"), ("vehicles-check", "check/")):
        for path in sorted((kit / "data" / name).glob("*/*")):
            if path.suffix.lower() in (".jpg", ".jpeg", ".png"):
                store.put(f"{prefix}{path.parent.name}/{path.name}", path.read_bytes())
    env = dict(os.environ, KERAS_HOME=str(imagenet_keras_home))
    proc = subprocess.run([sys.executable, "-m", "training.fit", "--bucket", store.bucket, "--endpoint-url",
                           moto_server.endpoint_url, "--positive", "car", "--no-progress"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-2000:]
    code = evaluate.main(["--bucket", store.bucket, "--endpoint-url", moto_server.endpoint_url, "--prefix", "check/",
                          "--name", "check"], env=env)
    assert code == 0, capsys.readouterr().err
    version = store.get_json("models/latest.json")["version"]
    ev = store.get_json(f"models/{version}/evaluation/check/evaluation.json")
    print(f"vehicles-check: accuracy {ev['metrics']['accuracy']:.3f}, AUC {ev['metrics']['roc_auc']:.4f}")
    assert ev["dataset"]["n_scored"] >= 170
    assert ev["metrics"]["accuracy"] >= 0.95 and ev["metrics"]["roc_auc"] >= 0.99


def test_a_local_bundle_is_evaluated_beside_itself(store: ObjectStore, moto_server: Any, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    build_tiny_bundle(tmp_path / "b")
    for key, data in _frames()[:6]:
        store.put(key, data)
    argv = ["--bucket", store.bucket, "--endpoint-url", moto_server.endpoint_url, "--prefix", PREFIX,
            "--bundle", str(tmp_path / "b")]
    assert evaluate.main([*argv, "--name", "local"], env=dict(os.environ)) == 0
    ev = json.loads((tmp_path / "b" / "evaluation" / "local" / "evaluation.json").read_text())
    assert ev["model"]["version"] == "tiny-v1" and ev["dataset"]["n_scored"] == 6
    assert not list(store.list("models/"))  # nothing written to the bucket's models
    capsys.readouterr()
    assert evaluate.main([*argv, "--name", "../escape"], env=dict(os.environ)) == 2
    assert capsys.readouterr().err.startswith("training.evaluate: error: --name")
