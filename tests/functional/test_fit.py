"""``training.fit`` end to end against the moto server, on synthetic frames.

Synthetic runs use random backbone weights (no download is possible here); the
vehicles-dev run uses real ImageNet weights when the Keras cache has them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from devstack.moto_server import MotoServer
from devstack.samples import generate
from shared import bundle
from shared.storage import ObjectStore
from tests.conftest import REPO
from training import fit

pytestmark = pytest.mark.training  # scikit-learn, LightGBM, TensorFlow: not in the function's runtime

PER_LABEL = 30


def upload(store: ObjectStore, labels: tuple[str, ...], per_label: int, prefix: str = "train/", seed: int = 0) -> None:
    for label, name, data in generate(labels, per_label, seed=seed, size=(160, 120)):
        store.put(f"{prefix}{label}/{name}", data, content_type="image/jpeg")


def run_fit(store: ObjectStore, endpoint: str, *extra: str, capsys: Any = None) -> tuple[int, str, str]:
    argv = ["--bucket", store.bucket, "--endpoint-url", endpoint, "--weights", "random", "--no-progress",
            "--n-estimators", "60", *extra]
    code = fit.main(argv, env=dict(os.environ))
    out = capsys.readouterr() if capsys is not None else None
    return code, out.out if out else "", out.err if out else ""


@pytest.fixture(scope="module")
def trained(moto_server: MotoServer, s3_client: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    s3_client.create_bucket(Bucket="fit-binary")
    store = ObjectStore(s3_client, "fit-binary")
    upload(store, ("bus", "car"), PER_LABEL)
    store.put("train/car/zz_corrupt.jpg", b"\xff\xd8\xff\xe0 not really a jpeg")
    store.put("train/bus/README.txt", b"not an image")
    out = tmp_path_factory.mktemp("bundle")
    code = fit.main(["--bucket", "fit-binary", "--endpoint-url", moto_server.endpoint_url, "--weights", "random",
                     "--no-progress", "--n-estimators", "60", "--positive", "car", "--out", str(out)],
                    env=dict(os.environ))
    assert code == 0
    latest = store.get_json("models/latest.json")
    return {"store": store, "out": out, "latest": latest, "endpoint": moto_server.endpoint_url,
            "latest_manifest": store.get_json(f"models/{latest['version']}/manifest.json")}


def test_bundle_files_checksums_and_manifest(trained: dict[str, Any]) -> None:
    store, out, latest = trained["store"], trained["out"], trained["latest"]
    version = latest["version"]
    keys = {o.key.rsplit("/", 1)[1] for o in store.list(f"models/{version}/")}
    assert {"manifest.json", "backbone.onnx", "backbone.onnx.data", "head.onnx", "head.txt", "report.json",
            "report.md", "confusion_matrix.png", "roc.png"} <= keys
    # The graph is small; its weights are the external-data file beside it (mapped by onnxruntime).
    assert (out / "backbone.onnx").stat().st_size < 1_000_000 < (out / "backbone.onnx.data").stat().st_size
    manifest = bundle.verify_dir(out, manifest_sha256=latest["manifest_sha256"])
    raw = manifest.raw
    assert raw["schema_version"] == bundle.SCHEMA_VERSION and raw["version"] == version
    assert manifest.classes == ["bus", "car"] and manifest.positive_class == "car"
    assert manifest.threshold is not None and 0 < manifest.threshold < 1
    assert raw["backbone"]["name"] == "mobilenet_v2" and raw["backbone"]["input_size"] == [224, 224]
    assert raw["backbone"]["weights"]["source"] == "random" and "smoke" in raw["backbone"]["weights"]["note"]
    assert raw["dataset"]["counts"] == {"bus": PER_LABEL, "car": PER_LABEL + 1}
    assert raw["dataset"]["skipped_non_image"] == 1 and raw["dataset"]["n_unreadable"] == 1
    assert len(raw["dataset"]["fingerprint"]) == 64
    assert len(raw["metrics"]["folds"]) == 5 and "roc_auc" in raw["metrics"]["mean"]
    assert {"tensorflow-cpu", "lightgbm", "onnxruntime", "python"} <= set(raw["versions"]) or \
        {"tensorflow", "lightgbm", "onnxruntime", "python"} <= set(raw["versions"])
    for name, meta in raw["files"].items():  # S3 copies match the manifest too
        assert bundle.sha256_bytes(store.get(f"models/{version}/{name}").body) == meta["sha256"]
    assert all(b"pickle" not in (out / n).read_bytes()[:0] for n in raw["files"])  # nothing pickled: all JSON/ONNX/PNG


def test_onnx_parity_recorded_and_reproducible(trained: dict[str, Any]) -> None:
    raw = json.loads((trained["out"] / "manifest.json").read_text())
    assert raw["parity"]["backbone"]["features_ok"] and raw["parity"]["backbone"]["n_images"] > 0
    assert raw["parity"]["head"]["probabilities_max_abs_diff"] <= 1e-5
    # The served graphs agree with each other: same frame, same decision as the report's threshold rule.
    from shared.runtime import Classifier

    clf = Classifier.from_dir(trained["out"])
    frame = next(generate(("car",), 1, seed=99, size=(160, 120)))[2]
    from shared.imaging import decode_image

    pred = clf.predict(decode_image(frame, clf.input_size)[None])[0]
    assert pred.label in ("bus", "car") and sum(pred.probabilities.values()) == pytest.approx(1, abs=1e-5)
    head = ort.InferenceSession(str(trained["out"] / "head.onnx"), providers=["CPUExecutionProvider"])
    assert head.get_outputs()[1].name == "probabilities"


def test_report_lists_unreadable_and_per_fold_table(trained: dict[str, Any]) -> None:
    md = (trained["out"] / "report.md").read_text()
    assert "| fold | n | accuracy | precision | recall | f1 | roc_auc | log_loss |" in md
    assert "mean ± std" in md and "zz_corrupt.jpg" in md
    report = json.loads((trained["out"] / "report.json").read_text())
    assert report["dataset"]["unreadable"][0]["key"] == "train/car/zz_corrupt.jpg"


def test_second_run_uses_the_cache_and_grown_dataset_computes_only_new(trained: dict[str, Any],
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    store, endpoint = trained["store"], trained["endpoint"]
    code, out, _ = run_fit(store, endpoint, "--no-promote", capsys=capsys)
    assert code == 0
    versions = sorted({o.key.split("/")[1] for o in store.list("models/") if o.key.count("/") == 2})
    report = store.get_json(f"models/{versions[-1]}/report.json") if versions else None
    again = [json.loads(store.get(o.key).body) for o in store.list("models/") if o.key.endswith("report.json")]
    cached = [r for r in again if r["features"]["cache_hits"] > 0]
    assert cached and cached[-1]["features"]["computed"] == 0
    # The exported backbone came from the ONNX cache: no TensorFlow, parity as measured when it was exported.
    assert cached[-1]["backbone_from_cache"] is True and cached[-1]["onnx_cache"]
    rerun = store.get_json(f"models/{cached[-1]['version']}/manifest.json")
    assert rerun["parity"]["backbone"]["from_cache"] == cached[-1]["onnx_cache"]
    assert rerun["backbone"]["onnx_cache"] == cached[-1]["onnx_cache"]
    assert rerun["files"]["backbone.onnx"] == trained["latest_manifest"]["files"]["backbone.onnx"]
    assert cached[-1]["features"]["cache_hits"] == 2 * PER_LABEL
    assert "not promoted" in out and report is not None
    assert store.get_json("models/latest.json") == trained["latest"]  # --no-promote left it alone
    upload(store, ("bus",), 3, prefix="train/", seed=1234)  # new names from another seed overwrite 3 bus frames
    for label, name, data in generate(("car",), 2, seed=555, size=(160, 120)):
        store.put(f"train/{label}/new_{name}", data)
    code, _, _ = run_fit(store, endpoint, "--no-promote", capsys=capsys)
    assert code == 0
    reports = [json.loads(store.get(o.key).body) for o in store.list("models/") if o.key.endswith("report.json")]
    grown = [r for r in reports if r["dataset"]["n_images"] == 2 * PER_LABEL + 1 + 2]
    assert grown and grown[0]["features"]["computed"] == 5  # 3 changed ETags + 2 new keys


def test_multiclass(moto_server: MotoServer, store: ObjectStore, tmp_path: Path,
                    capsys: pytest.CaptureFixture[str]) -> None:
    upload(store, ("bus", "car", "empty"), 20)
    code, out, _ = run_fit(store, moto_server.endpoint_url, "--folds", "4", "--out", str(tmp_path), capsys=capsys)
    assert code == 0, out
    manifest = bundle.verify_dir(tmp_path)
    assert manifest.classes == ["bus", "car", "empty"] and manifest.threshold is None
    assert manifest.positive_class is None and len(manifest.raw["metrics"]["folds"]) == 4
    assert manifest.raw["metrics"]["mean"]["roc_auc"] > 0.6
    head = ort.InferenceSession(str(tmp_path / "head.onnx"), providers=["CPUExecutionProvider"])
    probs = head.run(["probabilities"], {"features": np.zeros((2, 1280), np.float32)})[0]
    assert probs.shape == (2, 3)
    assert not (tmp_path / "roc.png").exists() and (tmp_path / "confusion_matrix.png").exists()


def test_group_by_keeps_cameras_together(moto_server: MotoServer, store: ObjectStore, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    upload(store, ("bus", "car"), 24)
    code, out, err = run_fit(store, moto_server.endpoint_url, "--group-by", r"(cam\d)_", "--folds", "4",
                             "--out", str(tmp_path), capsys=capsys)
    assert code == 0, err
    manifest = bundle.verify_dir(tmp_path)
    assert manifest.raw["metrics"]["grouped"] is True
    assert "StratifiedGroupKFold" in out


def test_chance_level_head_fails_loudly_and_is_not_promoted(moto_server: MotoServer, store: ObjectStore,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    # Both folders hold the same kind of frame: nothing to learn.
    for i, (_, name, data) in enumerate(generate(("car",), 60, seed=3, size=(160, 120))):
        store.put(f"train/{'ab'[i % 2]}/{name}", data)
    code, _, err = run_fit(store, moto_server.endpoint_url, capsys=capsys)
    assert code == 3
    assert "no better than" in err and "not promoted" in err
    assert store.head("models/latest.json") is None


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "training.fit", *args], cwd=REPO, capture_output=True, text=True,
                          env=env if env is not None else dict(os.environ), timeout=120)


def _one_line_error(proc: subprocess.CompletedProcess[str], needle: str) -> None:
    assert proc.returncode not in (0, 1), proc.stderr  # 1 would be an uncaught exception
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and needle in lines[0]
    assert lines[0].startswith("training.fit: error: ") and lines[0].endswith(".")


def test_user_errors_are_one_line(moto_server: MotoServer, store: ObjectStore, tmp_path: Path) -> None:
    ep = ["--endpoint-url", moto_server.endpoint_url, "--weights", "random"]
    _one_line_error(_cli("--bucket", "no-such-bucket", *ep), "does not exist")
    _one_line_error(_cli("--bucket", store.bucket, *ep), "No objects under")
    store.put("train/bus/a.jpg", next(generate(("bus",), 1))[2])
    _one_line_error(_cli("--bucket", store.bucket, *ep), "Only one label")
    store.put("train/car/b.jpg", next(generate(("car",), 1))[2])
    _one_line_error(_cli("--bucket", store.bucket, *ep), "at least 5 images")
    _one_line_error(_cli("--bucket", store.bucket, *ep, "--positive", "truck"), "at least 5 images")
    empty_home = tmp_path / "keras"
    env = dict(os.environ, KERAS_HOME=str(empty_home))
    proc = _cli("--bucket", store.bucket, "--endpoint-url", moto_server.endpoint_url, env=env)
    _one_line_error(proc, "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5")
    assert str(empty_home / "models") in proc.stderr and "--weights" in proc.stderr and "random" in proc.stderr
    _one_line_error(_cli(*ep), "--bucket")
    _one_line_error(_cli("--bucket", store.bucket, "--endpoint-url", "localhost:9", "--weights", "random"),
                    "not valid")
    cluttered = tmp_path / "cluttered"
    cluttered.mkdir()
    (cluttered / "holiday.jpg").write_bytes(b"x")
    _one_line_error(_cli("--bucket", store.bucket, *ep, "--out", str(cluttered)), "not empty")


def test_missing_credentials_is_one_line(moto_server: MotoServer, store: ObjectStore, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(HOME=str(tmp_path), AWS_CONFIG_FILE=str(tmp_path / "none"),
               AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"), AWS_EC2_METADATA_DISABLED="true")
    proc = _cli("--bucket", store.bucket, "--endpoint-url", moto_server.endpoint_url, "--region", "us-east-1",
                "--weights", "random", env=env)
    _one_line_error(proc, "credentials")


def test_too_many_unreadable_fails(moto_server: MotoServer, store: ObjectStore,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    upload(store, ("bus", "car"), 10)
    for i in range(3):
        store.put(f"train/bus/broken{i}.jpg", b"GIF89a truncated")
    code, _, err = run_fit(store, moto_server.endpoint_url, capsys=capsys)
    assert code == 2 and "could not be decoded" in err and "--max-unreadable" in err


def test_help_documents_every_flag() -> None:
    proc = _cli("--help")
    assert proc.returncode == 0
    for flag in ("--bucket", "--prefix", "--endpoint-url", "--region", "--labels", "--positive", "--group-by",
                 "--backbone", "--weights", "--batch-size", "--cache-prefix", "--folds", "--seed", "--out",
                 "--no-promote", "--model-prefix"):
        assert flag in proc.stdout


@pytest.mark.kit
@pytest.mark.slow
def test_vehicles_dev_end_to_end(kit: Path, moto_server: MotoServer, store: ObjectStore, tmp_path: Path) -> None:
    """The real photos, with real ImageNet weights when the cache has them (random otherwise)."""
    from tests.conftest import keras_home_with_imagenet

    root = kit / "data" / "vehicles-dev"
    for path in sorted(root.glob("*/*")):
        if path.suffix.lower() in (".jpg", ".jpeg", ".png"):
            store.put(f"train/{path.parent.name}/{path.name}", path.read_bytes())
    home = keras_home_with_imagenet() or (kit / "keras" if (kit / "keras" / "models").is_dir() else None)
    env = dict(os.environ)
    weights = "random"
    if home is not None:
        writable = tmp_path / "keras"
        import shutil

        shutil.copytree(home / "models", writable / "models")
        env["KERAS_HOME"], weights = str(writable), "imagenet"
    proc = _cli("--bucket", store.bucket, "--endpoint-url", moto_server.endpoint_url, "--weights", weights,
                "--no-progress", "--out", str(tmp_path / "bundle"), env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    manifest = bundle.verify_dir(tmp_path / "bundle")
    auc = manifest.raw["metrics"]["mean"]["roc_auc"]
    print(f"vehicles-dev: weights={weights} CV AUC={auc:.3f} "
          f"accuracy={manifest.raw['metrics']['mean']['accuracy']:.3f}")
    assert manifest.raw["dataset"]["n_images"] >= 170
    if weights == "imagenet":
        assert auc > 0.95 and manifest.has_imagenet_top
        assert manifest.raw["parity"]["backbone"]["features_max_abs_diff"] <= 1e-4


@pytest.mark.slow
def test_resnet50_random_weights(moto_server: MotoServer, store: ObjectStore, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    upload(store, ("bus", "car"), 10)
    code, _, err = run_fit(store, moto_server.endpoint_url, "--backbone", "resnet50", "--folds", "2",
                           "--min-auc", "0", "--parity-images", "4", "--out", str(tmp_path), capsys=capsys)
    assert code == 0, err
    manifest = bundle.verify_dir(tmp_path)
    assert manifest.backbone_name == "resnet50" and manifest.raw["backbone"]["feature_dim"] == 2048
    assert manifest.raw["backbone"]["preprocessing"]["channel_order"] == "BGR"
    assert manifest.raw["parity"]["backbone"]["features_ok"]
    sess = ort.InferenceSession(str(tmp_path / "backbone.onnx"), providers=["CPUExecutionProvider"])
    assert sess.get_outputs()[0].shape[1] == 2048


def test_promotion_gate_refuses_a_worse_model(trained: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    """A head trained on swapped labels is scored against the promoted one on train/ and is not promoted."""
    store, endpoint, before = trained["store"], trained["endpoint"], trained["latest"]
    for obj in list(store.list("train/")):
        label, name = obj.key.split("/")[1:3]
        if label in ("bus", "car"):
            store.put(f"swapped/{'car' if label == 'bus' else 'bus'}/{name}", store.get(obj.key).body)
    code, _, err = run_fit(store, endpoint, "--prefix", "swapped/", "--positive", "car", "--test-prefix", "train/",
                           capsys=capsys)
    assert code == 5, err
    assert "not promoted" in err and "--force" in err and "worse than the promoted model" in err
    assert store.get_json("models/latest.json") == before  # the promoted model stays
    reports = [store.get_json(o.key) for o in store.list("models/") if o.key.endswith("/report.json")]
    gated = [r for r in reports if r.get("promotion")]
    assert len(gated) == 1
    gate = gated[0]["promotion"]
    assert gate["promote"] is False and gate["forced"] is False and gate["test_prefix"] == "train/"
    assert gate["previous"]["version"] == before["version"]
    assert gate["new"]["accuracy"] < gate["previous"]["accuracy"] - gate["margin"]
    readable = sum(1 for o in store.list("train/") if o.key.endswith(".jpg")) - 1
    assert gate["new"]["n"] == gate["previous"]["n"] == readable  # the same frames, the corrupt one counted apart
    assert gate["new"]["n_unreadable"] == 1
    version = gated[0]["version"]
    names = {o.key.split("/")[3] for o in store.list(f"models/{version}/evaluation/")}
    assert names == {"gate-new", "gate-previous"}
    assert "Promotion gate: REFUSED" in store.get(f"models/{version}/report.md").body.decode()
    assert before["based_on"]["gate"] is None  # the first model was promoted on cross-validation alone
    # --force promotes it all the same, and latest.json says so (features and backbone now come from the caches).
    code, _, err = run_fit(store, endpoint, "--prefix", "swapped/", "--positive", "car", "--test-prefix", "train/",
                           "--force", capsys=capsys)
    assert code == 0, err
    latest = store.get_json("models/latest.json")
    assert latest["version"] != before["version"]
    assert latest["based_on"]["forced"] is True and latest["based_on"]["promote"] is True
    assert latest["based_on"]["reason"].startswith("forced") and latest["based_on"]["previous"]["version"] == \
        before["version"]
    store.put("models/latest.json", bundle.dump_json(before))  # leave the module's bucket as the other tests expect


def test_gate_decision_rule() -> None:
    from training.gate import decide

    good = {"accuracy": 0.95, "roc_auc": 0.99}
    assert decide(good, None, margin=0.01, forced=False)[0] is True
    assert decide({"accuracy": 0.945, "roc_auc": 0.99}, good, margin=0.01, forced=False)[0] is True
    refused, why = decide({"accuracy": 0.93, "roc_auc": 0.995}, good, margin=0.01, forced=False)
    assert refused is False and "accuracy 0.9300 < 0.9500" in why
    assert decide({"accuracy": 0.95, "roc_auc": 0.97}, good, margin=0.01, forced=False)[0] is False
    forced, why = decide({"accuracy": 0.5, "roc_auc": 0.5}, good, margin=0.01, forced=True)
    assert forced is True and why.startswith("forced")
