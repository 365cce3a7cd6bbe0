"""ImageNet weights missing from the Keras cache are fetched by Keras' own downloader (a local server here)."""

from __future__ import annotations

import functools
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from devstack.samples import jpeg_bytes
from functions.classify import make_handler
from shared import bundle
from shared.backbones import get_backbone
from shared.config import FunctionSettings, S3Settings
from shared.errors import WeightsDownloadError, WeightsNotFoundError
from shared.storage import ObjectStore
from tests.fakes import build_tiny_bundle, publish_bundle, s3_event
from tests.result_schema import assert_valid_result
from training.keras_backbone import resolve_weights
from training.weights_download import download

MOBILENET = get_backbone("mobilenet_v2")


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A plain HTTP server on 127.0.0.1 serving ``tmp_path/served``."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]  # silence the request log
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", root
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.slow
@pytest.mark.training  # Keras does the download
def test_missing_weights_are_downloaded_into_the_keras_cache(server: tuple[str, Path], tmp_path: Path) -> None:
    base_url, root = server
    payload = b"HDF5 stand-in: the download path does not open the file" * 100
    (root / MOBILENET.weights_file_top).write_bytes(payload)
    home = tmp_path / "keras"
    choice = resolve_weights(MOBILENET, "imagenet", home=home, seed=1,
                             downloader=lambda spec, h: download(spec, h, base_url=base_url))
    assert choice.source == "imagenet" and choice.include_top
    assert choice.path == home / "models" / MOBILENET.weights_file_top
    assert choice.path.read_bytes() == payload
    # Next time the cache has it: no download at all.
    again = resolve_weights(MOBILENET, "imagenet", home=home, seed=1, downloader=_no_download)
    assert again.identity == choice.identity


@pytest.mark.slow
@pytest.mark.training  # Keras does the download
def test_a_file_failing_the_published_hash_is_refused(server: tuple[str, Path], tmp_path: Path) -> None:
    base_url, root = server
    resnet = get_backbone("resnet50")  # Keras publishes a hash for the ResNet50 weights
    (root / resnet.weights_file_top).write_bytes(b"not the published file")
    with pytest.raises(WeightsDownloadError) as err:
        download(resnet, tmp_path / "keras", base_url=base_url)
    assert "corrupt" in str(err.value).lower() or "hash" in str(err.value).lower()
    assert not (tmp_path / "keras" / "models" / resnet.weights_file_top).exists()


def test_no_network_stops_with_the_one_line_message(tmp_path: Path) -> None:
    def offline(spec: object, home: Path) -> tuple[Path, bool]:
        raise WeightsDownloadError("URL fetch failure: [Errno -3] Temporary failure in name resolution")

    with pytest.raises(WeightsNotFoundError) as err:
        resolve_weights(MOBILENET, "imagenet", home=tmp_path, seed=1, downloader=offline)
    message = err.value.message
    assert "\n" not in message and message.endswith(".")
    assert MOBILENET.weights_file_notop in message and "name resolution" in message and "--weights" in message


def _no_download(spec: object, home: Path) -> tuple[Path, bool]:
    raise AssertionError("the cache had the file; nothing should be downloaded")


@pytest.mark.parametrize("source", ["random", "imagenet"])
def test_a_random_weights_bundle_marks_every_result(source: str, store: ObjectStore, s3_client: Any,
                                                    s3_settings: S3Settings, tmp_path: Path) -> None:
    folder = tmp_path / "bundle"
    build_tiny_bundle(folder)
    raw = json.loads((folder / bundle.MANIFEST).read_text())
    raw["backbone"]["weights"] = {"source": source, "file": None, "include_top": False, "identity": "x", "note": None}
    (folder / bundle.MANIFEST).unlink()
    bundle.write_manifest(folder, {k: v for k, v in raw.items() if k not in ("schema_version", "files")})
    publish_bundle(store, folder)
    store.put("incoming/cam/1.jpg", jpeg_bytes(Image.new("RGB", (64, 48), (200, 40, 40))))
    settings = FunctionSettings(model_cache_dir=str(tmp_path / "cache"), s3=s3_settings)
    make_handler(settings, stores=lambda b: ObjectStore(s3_client, b))(s3_event(store.bucket, ["incoming/cam/1.jpg"]),
                                                                       None)
    result = store.get_json("results/cam/1.jpg.json")
    assert_valid_result(result)
    assert result["status"] == "ok"
    if source == "random":
        assert result["model"]["weights"] == "random"
        assert "random" in result["warning"] and "KERAS_HOME" in result["warning"]
    else:
        assert "warning" not in result and "weights" not in result["model"]
