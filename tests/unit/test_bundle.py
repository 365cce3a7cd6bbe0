"""shared.bundle: manifests, local verification, and the S3 round trip (moto in-process).

The ONNX files are opaque bytes here: nothing in shared.bundle loads them.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from moto import mock_aws

from shared.bundle import (
    LATEST,
    MANIFEST,
    SCHEMA_VERSION,
    Manifest,
    check_manifest,
    dump_json,
    fetch_bundle,
    load_pinned,
    promote,
    resolve_version,
    upload_bundle,
    verify_dir,
    write_manifest,
)
from shared.config import S3Settings
from shared.errors import (
    BundleError,
    BundleIncompatibleError,
    BundleIntegrityError,
    BundleNotFoundError,
)
from shared.storage import ObjectData, ObjectInfo, ObjectStore, make_client
from tests.fakes import build_tiny_bundle, publish_bundle
from tests.memory_store import MemoryStore

VERSION = "20240102-030405"
MODEL_PREFIX = "models/"
FIELDS = {
    "version": VERSION,
    "classes": ["empty", "vehicle"],
    "positive_class": "vehicle",
    "threshold": 0.42,
    "backbone": {"name": "mobilenet_v2", "input_size": [224, 160], "has_imagenet_top": False},
    "decoder_version": "1",
}
RUNTIME = ("backbone.onnx", "head.onnx")  # the runtime files (RUNTIME_FILES) this bundle has
CONTENT = {
    "backbone.onnx": b"\x08\x07backbone" * 50,
    "head.onnx": b"\x08\x07head" * 20,
    "report.md": "# Report\n\nAccuracy 0.97 — good.\n".encode(),
    "metrics.json": b'{"accuracy": 0.97}\n',
}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def make_bundle(path: Path, **overrides: Any) -> tuple[Path, Manifest, str]:
    path.mkdir(parents=True)
    for name, data in CONTENT.items():
        (path / name).write_bytes(data)
    manifest, manifest_sha = write_manifest(path, {**FIELDS, **overrides})
    return path, manifest, manifest_sha


def rewrite_manifest(bundle: Path, **changes: Any) -> str:
    raw = json.loads((bundle / MANIFEST).read_bytes())
    raw.update(changes)
    data = dump_json(raw)
    (bundle / MANIFEST).write_bytes(data)
    return sha(data)


def flip_a_byte(path: Path, at: int = 3) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


@pytest.fixture()
def bundle(tmp_path: Path) -> tuple[Path, Manifest, str]:
    return make_bundle(tmp_path / "bundle")


# -- write_manifest ---------------------------------------------------------------------


def test_write_manifest_checksums_every_file(bundle: tuple[Path, Manifest, str]) -> None:
    path, manifest, manifest_sha = bundle
    assert set(manifest.files) == set(CONTENT)  # every file, and not the manifest itself
    for name, data in CONTENT.items():
        assert manifest.files[name] == {"sha256": sha(data), "size": len(data)}
    written = (path / MANIFEST).read_bytes()
    assert manifest_sha == sha(written)
    assert json.loads(written) == manifest.raw
    assert manifest.raw["schema_version"] == SCHEMA_VERSION


def test_manifest_fields_are_typed(bundle: tuple[Path, Manifest, str]) -> None:
    _, manifest, _ = bundle
    assert manifest.version == VERSION
    assert manifest.classes == ["empty", "vehicle"]
    assert manifest.positive_class == "vehicle"
    assert manifest.threshold == pytest.approx(0.42)
    assert manifest.backbone_name == "mobilenet_v2"
    assert manifest.input_size == (224, 160)
    assert manifest.has_imagenet_top is False
    assert manifest.raw["decoder_version"] == "1"  # extra fields are kept


def test_manifest_is_plain_json_with_no_pickle(bundle: tuple[Path, Manifest, str]) -> None:
    path, manifest, _ = bundle
    data = (path / MANIFEST).read_bytes()
    assert not data.startswith(b"\x80")  # the pickle protocol 2+ opcode
    text = data.decode("utf-8")
    parsed = json.loads(text)
    assert isinstance(parsed, dict)
    # A JSON round trip reproduces the file byte for byte: nothing but JSON types inside.
    assert dump_json(parsed) == data
    assert dump_json(manifest.raw) == data
    assert not [p for p in path.iterdir() if p.suffix in {".pkl", ".pickle", ".joblib", ".npy", ".npz"}]


def test_write_manifest_owns_schema_version_and_files(tmp_path: Path) -> None:
    _, manifest, _ = make_bundle(tmp_path / "b", schema_version=99, files={"evil": {"sha256": "0", "size": 0}})
    assert manifest.raw["schema_version"] == SCHEMA_VERSION
    assert set(manifest.files) == set(CONTENT)


@pytest.mark.parametrize("missing", ["backbone.onnx", "head.onnx"])
def test_write_manifest_refuses_a_bundle_without_its_models(tmp_path: Path, missing: str) -> None:
    path = tmp_path / "b"
    path.mkdir()
    for name, data in CONTENT.items():
        if name != missing:
            (path / name).write_bytes(data)
    with pytest.raises(BundleIntegrityError) as info:
        write_manifest(path, dict(FIELDS))
    assert missing in str(info.value)
    assert not (path / MANIFEST).exists()


def test_rewriting_the_manifest_gives_the_same_checksum(tmp_path: Path) -> None:
    path, _, first = make_bundle(tmp_path / "b")
    _, second = write_manifest(path, dict(FIELDS))
    assert first == second  # deterministic: sorted keys, the old manifest not checksummed


# -- verify_dir -------------------------------------------------------------------------


def test_verify_dir_passes_for_a_good_bundle(bundle: tuple[Path, Manifest, str]) -> None:
    path, manifest, manifest_sha = bundle
    assert verify_dir(path) == manifest
    assert verify_dir(path, manifest_sha256=manifest_sha) == manifest


@pytest.mark.parametrize("name", sorted(CONTENT))
def test_one_changed_byte_in_any_file_is_caught(bundle: tuple[Path, Manifest, str], name: str) -> None:
    path, _, manifest_sha = bundle
    flip_a_byte(path / name)
    with pytest.raises(BundleIntegrityError) as info:
        verify_dir(path, manifest_sha256=manifest_sha)
    assert name in str(info.value)
    assert info.value.context["path"] == str(path / name)
    assert str(info.value).endswith(".")


@pytest.mark.parametrize("name", ["head.onnx", "report.md"])
def test_a_missing_file_is_caught(bundle: tuple[Path, Manifest, str], name: str) -> None:
    path, _, _ = bundle
    (path / name).unlink()
    with pytest.raises(BundleIntegrityError) as info:
        verify_dir(path)
    assert name in str(info.value)


def test_a_manifest_that_differs_from_the_given_checksum_is_caught(bundle: tuple[Path, Manifest, str]) -> None:
    path, _, manifest_sha = bundle
    # An edited threshold keeps every file checksum valid: only the manifest's own sha catches it.
    rewrite_manifest(path, threshold=0.01)
    verify_dir(path)  # self-consistent ...
    with pytest.raises(BundleIntegrityError) as info:
        verify_dir(path, manifest_sha256=manifest_sha)  # ... but not the promoted one
    assert LATEST in str(info.value)
    with pytest.raises(BundleIntegrityError):
        verify_dir(path, manifest_sha256="0" * 64)


@pytest.mark.parametrize("schema", [SCHEMA_VERSION + 1, 0, "1", None])
def test_a_wrong_schema_version_is_incompatible(bundle: tuple[Path, Manifest, str], schema: Any) -> None:
    path, _, _ = bundle
    rewrite_manifest(path, schema_version=schema)
    with pytest.raises(BundleIncompatibleError) as info:
        verify_dir(path)
    assert repr(schema) in str(info.value)
    assert str(info.value).endswith(".")


@pytest.mark.parametrize("field", ["version", "classes", "backbone", "files"])
def test_a_manifest_missing_a_field_is_incompatible(field: str) -> None:
    raw = {**FIELDS, "schema_version": SCHEMA_VERSION,
           "files": {"backbone.onnx": {"sha256": "x", "size": 1}, "head.onnx": {"sha256": "y", "size": 1}}}
    del raw[field]
    with pytest.raises(BundleIncompatibleError) as info:
        check_manifest(raw, where="here")
    assert repr(field) in str(info.value)


def test_a_manifest_not_listing_a_model_is_incompatible(bundle: tuple[Path, Manifest, str]) -> None:
    path, manifest, _ = bundle
    files = dict(manifest.files)
    del files["head.onnx"]
    rewrite_manifest(path, files=files)
    with pytest.raises(BundleIncompatibleError, match="head.onnx"):
        verify_dir(path)


def test_a_folder_without_a_manifest_is_not_a_bundle(tmp_path: Path) -> None:
    with pytest.raises(BundleNotFoundError) as info:
        verify_dir(tmp_path)
    assert MANIFEST in str(info.value)


@pytest.mark.parametrize("damage", [b"{not json", b"\xff\xfe\x00", b"", b"[1, 2, 3]\n", b'"a string"\n'])
def test_a_damaged_manifest_is_a_bundle_error_not_a_crash(bundle: tuple[Path, Manifest, str],
                                                          damage: bytes) -> None:
    path, _, _ = bundle
    (path / MANIFEST).write_bytes(damage)
    with pytest.raises(BundleError) as info:
        verify_dir(path)
    assert str(path) in str(info.value)
    assert str(info.value).endswith(".")


@pytest.mark.parametrize("name", ["../outside.bin", "sub/inner.bin", "/abs.bin", "..", ""])
def test_file_names_in_a_manifest_must_stay_inside_the_bundle(name: str) -> None:
    raw = {**FIELDS, "schema_version": SCHEMA_VERSION,
           "files": {"backbone.onnx": {"sha256": "x", "size": 1}, "head.onnx": {"sha256": "y", "size": 1},
                     name: {"sha256": "z", "size": 1}}}
    with pytest.raises(BundleIncompatibleError) as info:
        check_manifest(raw, where="s3://bucket/models/v/")
    assert repr(name) in str(info.value)


# -- S3: upload, promote, resolve, fetch --------------------------------------------------

_bucket_ids = itertools.count()


class CountingStore(ObjectStore):
    """An ObjectStore that records the key of every get and put."""

    def __init__(self, client: Any, bucket: str) -> None:
        super().__init__(client, bucket)
        self.gets: list[str] = []
        self.puts: list[str] = []

    def get(self, key: str, *, max_bytes: int | None = None) -> ObjectData:
        self.gets.append(key)
        return super().get(key, max_bytes=max_bytes)

    def download(self, key: str, path: Path, **kwargs: Any) -> ObjectInfo:
        self.gets.append(key)
        return super().download(key, path, **kwargs)

    def put(self, key: str, body: bytes, **kwargs: Any) -> str:
        self.puts.append(key)
        return super().put(key, body, **kwargs)


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    with mock_aws():
        yield make_client(S3Settings(region="us-east-1"))


@pytest.fixture()
def store(client: Any) -> CountingStore:
    name = f"unit-bundle-{next(_bucket_ids)}"
    client.create_bucket(Bucket=name)
    return CountingStore(client, name)


@pytest.fixture()
def uploaded(store: CountingStore, bundle: tuple[Path, Manifest, str]) -> str:
    """The bundle uploaded and promoted; returns its manifest sha256."""
    path, _, manifest_sha = bundle
    upload_bundle(store, path, MODEL_PREFIX, VERSION)
    promote(store, MODEL_PREFIX, VERSION, manifest_sha, "2024-01-02T03:04:05Z")
    store.gets.clear()
    store.puts.clear()
    return manifest_sha


def test_upload_bundle_writes_every_file_manifest_last(store: CountingStore,
                                                       bundle: tuple[Path, Manifest, str]) -> None:
    path, _, _ = bundle
    prefix = upload_bundle(store, path, MODEL_PREFIX, VERSION)
    assert prefix == f"{MODEL_PREFIX}{VERSION}/"
    assert store.puts[-1] == prefix + MANIFEST  # a reader never sees a manifest before its files
    assert sorted(store.puts) == sorted(prefix + name for name in [*CONTENT, MANIFEST])
    assert sorted(info.key for info in store.list(prefix)) == sorted(store.puts)
    for name, data in CONTENT.items():
        assert store.get(prefix + name).body == data
    assert store.get(prefix + MANIFEST).body == (path / MANIFEST).read_bytes()
    content_type = {name: store.client.head_object(Bucket=store.bucket, Key=prefix + name)["ContentType"]
                    for name in [*CONTENT, MANIFEST]}
    assert content_type["backbone.onnx"] == "application/octet-stream"
    assert content_type[MANIFEST] == "application/json"
    assert content_type["metrics.json"] == "application/json"
    assert content_type["report.md"].startswith("text/markdown")


def test_upload_bundle_catches_a_corrupted_read_back(client: Any, store: CountingStore,
                                                     bundle: tuple[Path, Manifest, str]) -> None:
    class LossyStore(ObjectStore):
        def get(self, key: str, *, max_bytes: int | None = None) -> ObjectData:
            data = super().get(key, max_bytes=max_bytes)
            if key.endswith("head.onnx"):
                return ObjectData(data.key, data.etag, data.size, data.body[:-1] + b"?")
            return data

    path, _, _ = bundle
    with pytest.raises(BundleIntegrityError) as info:
        upload_bundle(LossyStore(client, store.bucket), path, MODEL_PREFIX, VERSION)
    assert info.value.context["key"] == f"{MODEL_PREFIX}{VERSION}/head.onnx"


def test_promote_and_resolve_version(store: CountingStore, uploaded: str) -> None:
    latest = store.get_json(MODEL_PREFIX + LATEST)
    assert latest == {"version": VERSION, "manifest_sha256": uploaded, "created_at": "2024-01-02T03:04:05Z"}
    assert resolve_version(store, MODEL_PREFIX, None) == (VERSION, uploaded)


def test_a_pinned_version_skips_latest(client: Any) -> None:
    empty = CountingStore(client, "no-such-bucket-even")
    assert resolve_version(empty, MODEL_PREFIX, "20230101-000000") == ("20230101-000000", None)
    assert empty.gets == []


def test_resolve_version_without_a_promoted_model(store: CountingStore) -> None:
    with pytest.raises(BundleNotFoundError) as info:
        resolve_version(store, MODEL_PREFIX, None)
    assert info.value.context == {"bucket": store.bucket, "key": MODEL_PREFIX + LATEST}
    assert "training.fit" in str(info.value) and "MODEL_VERSION" in str(info.value)


def test_fetch_bundle_downloads_and_verifies(store: CountingStore, uploaded: str, tmp_path: Path) -> None:
    version, manifest_sha = resolve_version(store, MODEL_PREFIX, None)
    target, manifest = fetch_bundle(store, MODEL_PREFIX, version, tmp_path / "cache", manifest_sha)
    assert target == tmp_path / "cache" / VERSION
    assert manifest.version == VERSION and manifest.classes == FIELDS["classes"]
    for name in RUNTIME:
        assert (target / name).read_bytes() == CONTENT[name]
    # The function fetches what it runs, not the reports.
    assert sorted(p.name for p in target.iterdir()) == sorted([*RUNTIME, MANIFEST])
    assert sha((target / MANIFEST).read_bytes()) == uploaded
    assert not [p.name for p in target.iterdir() if p.name.startswith(".part-")]  # no temp files left


def test_fetch_bundle_can_fetch_every_file(store: CountingStore, uploaded: str, tmp_path: Path) -> None:
    target, manifest = fetch_bundle(store, MODEL_PREFIX, VERSION, tmp_path / "cache", uploaded, names=None)
    for name, data in CONTENT.items():
        assert (target / name).read_bytes() == data
    assert verify_dir(target, manifest_sha256=uploaded) == manifest
    assert not [p.name for p in target.iterdir() if p.name.startswith(".part-")]  # no temp files left


def test_fetch_bundle_removes_parts_a_killed_fetch_left_behind(store: CountingStore, uploaded: str,
                                                               tmp_path: Path) -> None:
    target = tmp_path / "cache" / VERSION
    target.mkdir(parents=True)
    stale, fresh = target / ".part-killed", target / ".part-running"
    stale.write_bytes(b"x" * 1000)
    fresh.write_bytes(b"y")
    os.utime(stale, (time.time() - 3600, time.time() - 3600))
    fetch_bundle(store, MODEL_PREFIX, VERSION, tmp_path / "cache", uploaded)
    assert not stale.exists()
    assert fresh.exists()  # may be another process's download in progress


def test_fetch_bundle_reuses_verified_cached_files(store: CountingStore, uploaded: str, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    target, _ = fetch_bundle(store, MODEL_PREFIX, VERSION, cache, uploaded)
    inodes = {name: (target / name).stat().st_ino for name in RUNTIME}
    store.gets.clear()
    fetch_bundle(store, MODEL_PREFIX, VERSION, cache, uploaded)
    assert store.gets == [f"{MODEL_PREFIX}{VERSION}/{MANIFEST}"]  # only the manifest is read again
    assert {name: (target / name).stat().st_ino for name in RUNTIME} == inodes  # files not rewritten


def test_fetch_bundle_replaces_a_damaged_cached_file(store: CountingStore, uploaded: str, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    target, _ = fetch_bundle(store, MODEL_PREFIX, VERSION, cache, uploaded)
    flip_a_byte(target / "backbone.onnx")
    (target / "head.onnx").unlink()
    store.gets.clear()
    fetch_bundle(store, MODEL_PREFIX, VERSION, cache, uploaded)
    prefix = f"{MODEL_PREFIX}{VERSION}/"
    assert sorted(store.gets) == sorted([prefix + MANIFEST, prefix + "backbone.onnx", prefix + "head.onnx"])
    assert (target / "backbone.onnx").read_bytes() == CONTENT["backbone.onnx"]
    assert (target / "head.onnx").read_bytes() == CONTENT["head.onnx"]


def test_a_tampered_object_in_s3_is_refused(store: CountingStore, uploaded: str, tmp_path: Path) -> None:
    key = f"{MODEL_PREFIX}{VERSION}/head.onnx"
    store.put(key, CONTENT["head.onnx"][:-1] + b"!")
    with pytest.raises(BundleIntegrityError) as info:
        fetch_bundle(store, MODEL_PREFIX, VERSION, tmp_path / "cache", uploaded)
    assert "head.onnx" in str(info.value)
    # Once S3 is restored the same cache recovers: the bad copy is not trusted.
    store.put(key, CONTENT["head.onnx"])
    _, manifest = fetch_bundle(store, MODEL_PREFIX, VERSION, tmp_path / "cache", uploaded)
    assert manifest.version == VERSION


def test_a_tampered_manifest_in_s3_is_refused_before_any_model_is_read(
        store: CountingStore, uploaded: str, tmp_path: Path) -> None:
    key = f"{MODEL_PREFIX}{VERSION}/{MANIFEST}"
    raw = store.get_json(key)
    raw["threshold"] = 0.0  # would flag every frame
    store.put(key, dump_json(raw))
    store.gets.clear()
    with pytest.raises(BundleIntegrityError) as info:
        fetch_bundle(store, MODEL_PREFIX, VERSION, tmp_path / "cache", uploaded)
    assert info.value.context["key"] == key
    assert store.gets == [key]
    assert not (tmp_path / "cache" / VERSION / MANIFEST).exists()


def test_fetching_a_version_that_does_not_exist(store: CountingStore, uploaded: str, tmp_path: Path) -> None:
    with pytest.raises(BundleNotFoundError) as info:
        fetch_bundle(store, MODEL_PREFIX, "19990101-000000", tmp_path / "cache")
    assert "MODEL_VERSION" in str(info.value)
    assert info.value.context["key"] == f"{MODEL_PREFIX}19990101-000000/{MANIFEST}"


def test_fetching_an_incompatible_bundle(store: CountingStore, tmp_path: Path) -> None:
    path, _, _ = make_bundle(tmp_path / "old")
    new_sha = rewrite_manifest(path, schema_version=SCHEMA_VERSION + 1)
    upload_bundle(store, path, MODEL_PREFIX, VERSION)
    with pytest.raises(BundleIncompatibleError):
        fetch_bundle(store, MODEL_PREFIX, VERSION, tmp_path / "cache", new_sha)


def test_a_manifest_in_s3_cannot_write_outside_the_cache(store: CountingStore, uploaded: str,
                                                         tmp_path: Path) -> None:
    # A pinned version has no manifest checksum to check against, so the manifest's
    # file names are all that stand between S3 and the local file system.
    key = f"{MODEL_PREFIX}{VERSION}/{MANIFEST}"
    raw = store.get_json(key)
    raw["files"]["../../escaped.bin"] = {"sha256": sha(b"payload"), "size": 7}
    store.put(key, dump_json(raw))
    store.put(f"{MODEL_PREFIX}{VERSION}/../../escaped.bin", b"payload")  # S3 keys may contain ".."
    cache = tmp_path / "deep" / "cache"
    with pytest.raises(BundleIncompatibleError):
        fetch_bundle(store, MODEL_PREFIX, VERSION, cache)
    assert not (tmp_path / "deep" / "escaped.bin").exists()
    assert not list(tmp_path.rglob("escaped.bin"))


def test_dump_json_is_strict_and_turns_nan_into_null() -> None:
    import json as _json

    from shared.bundle import dump_json

    data = dump_json({"auc": float("nan"), "folds": [1.0, float("inf")], "ok": 0.5})
    assert _json.loads(data) == {"auc": None, "folds": [1.0, None], "ok": 0.5}
    assert b"NaN" not in data and b"Infinity" not in data


def test_upload_refuses_to_overwrite_an_existing_version(tmp_path: Path) -> None:
    from shared.bundle import upload_bundle
    from shared.errors import BundleIntegrityError
    from tests.memory_store import MemoryStore

    bundle_dir = tmp_path / "b"
    bundle_dir.mkdir()
    (bundle_dir / "backbone.onnx").write_bytes(b"x")
    (bundle_dir / "head.onnx").write_bytes(b"y")
    write_manifest(bundle_dir, {"version": "v1", "classes": ["a", "b"], "backbone": {"name": "t"}})
    store = MemoryStore()
    upload_bundle(store, bundle_dir, "models/", "v1")
    before = dict(store.objects)
    with pytest.raises(BundleIntegrityError, match="never overwritten"):
        upload_bundle(store, bundle_dir, "models/", "v1")
    assert store.objects == before


# -- load_pinned: the function's and the batch workers' one way to load a resolved version ----------


@pytest.fixture()
def tiny(tmp_path: Path) -> tuple[MemoryStore, str, str]:
    """A real (tiny) bundle published to an in-memory store; returns the store, its version and manifest sha256."""
    store = MemoryStore("bkt")
    build_tiny_bundle(tmp_path / "bundle")
    version = publish_bundle(store, tmp_path / "bundle")
    return store, version, sha((tmp_path / "bundle" / MANIFEST).read_bytes())


@pytest.mark.parametrize("background", [False, True])
def test_load_pinned_gives_a_working_classifier(tiny: tuple[MemoryStore, str, str], tmp_path: Path,
                                                background: bool) -> None:
    store, version, manifest_sha = tiny
    clf = load_pinned(store, MODEL_PREFIX, version, manifest_sha, tmp_path / "cache", threads=1,
                      background=background).wait()
    assert clf.manifest.version == version and not clf.failed
    assert [p.label for p in clf.predict(np.zeros((2, 32, 32, 3), dtype=np.uint8))] != []
    assert sorted(p.name for p in (tmp_path / "cache" / version).iterdir()) == sorted(
        ["backbone.onnx", "head.onnx", MANIFEST])


def test_load_pinned_refuses_a_manifest_other_than_the_resolved_one(tiny: tuple[MemoryStore, str, str],
                                                                    tmp_path: Path) -> None:
    store, version, _ = tiny
    # Raised at once, even in the background mode: nothing is fetched for a manifest that was swapped.
    with pytest.raises(BundleIntegrityError):
        load_pinned(store, MODEL_PREFIX, version, "0" * 64, tmp_path / "cache", background=True)
    assert not (tmp_path / "cache" / version / "head.onnx").exists()


def test_load_pinned_reports_a_failed_file_fetch_through_the_classifier(tiny: tuple[MemoryStore, str, str],
                                                                        tmp_path: Path) -> None:
    store, version, manifest_sha = tiny
    store.put(f"{MODEL_PREFIX}{version}/head.onnx", b"tampered")
    clf = load_pinned(store, MODEL_PREFIX, version, manifest_sha, tmp_path / "cache", background=True)
    with pytest.raises(BundleIntegrityError):
        clf.wait()
    assert clf.failed
