"""The model bundle: a folder (or S3 prefix) that describes itself.

A bundle holds ``backbone.onnx`` (with its weights in ``backbone.onnx.data``), ``head.onnx``
and ``manifest.json`` (plus reports).
The manifest records a sha256 for every other file; ``models/latest.json`` records the
manifest's own sha256, so a tampered manifest is caught as well.  No pickle anywhere.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import re
import tempfile
import time
import typing
from collections.abc import Collection, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.errors import (
    AccessDeniedError,
    BundleIncompatibleError,
    BundleIntegrityError,
    BundleNotFoundError,
    ObjectNotFoundError,
)
from shared.manifest import ManifestDoc, problems
from shared.storage import ObjectStore

if TYPE_CHECKING:
    from shared.runtime import Classifier

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
LATEST = "latest.json"
REQUIRED_FILES = ("backbone.onnx", "head.onnx")
# What shared.runtime.Classifier opens; the function fetches only these (not the reports).
IMAGENET_CLASSES = "imagenet_classes.json"
# The backbone's weights as ONNX external data, beside backbone.onnx (bundles made before
# this have them inside backbone.onnx and no such file).
BACKBONE_WEIGHTS = "backbone.onnx.data"
RUNTIME_FILES = (*REQUIRED_FILES, BACKBONE_WEIGHTS, IMAGENET_CLASSES)
FETCH_THREADS = 4
PART_PREFIX = ".part-"
PART_MAX_AGE_S = 15 * 60  # longer than a Lambda invocation can live
_ABSENT = (ObjectNotFoundError, AccessDeniedError)
_VERSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dump_json(obj: Any) -> bytes:
    """Strict JSON (NaN and infinities become null), so jq and browsers can read it."""
    return (json.dumps(_finite(obj), indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n").encode()


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


@dataclasses.dataclass(frozen=True)
class Manifest:
    """Typed view of ``manifest.json`` (schema: ``shared.manifest.ManifestDoc``); ``raw`` keeps every field."""

    raw: dict[str, Any]

    @property
    def doc(self) -> ManifestDoc:
        return typing.cast(ManifestDoc, self.raw)

    @property
    def weights_source(self) -> str | None:
        """"imagenet", "file" or "random" (a smoke model); None when the manifest does not say."""
        source = self.raw["backbone"].get("weights", {}).get("source")
        return None if source is None else str(source)

    @property
    def version(self) -> str:
        return str(self.raw["version"])

    @property
    def classes(self) -> list[str]:
        return list(self.raw["classes"])

    @property
    def positive_class(self) -> str | None:
        return self.raw.get("positive_class")

    @property
    def threshold(self) -> float | None:
        value = self.raw.get("threshold")
        return None if value is None else float(value)

    @property
    def backbone_name(self) -> str:
        return str(self.raw["backbone"]["name"])

    @property
    def input_size(self) -> tuple[int, int]:
        width, height = self.raw["backbone"]["input_size"]
        return int(width), int(height)

    @property
    def has_imagenet_top(self) -> bool:
        return bool(self.raw["backbone"].get("has_imagenet_top"))

    @property
    def files(self) -> dict[str, dict[str, Any]]:
        return dict(self.raw["files"])


def write_manifest(bundle_dir: Path, manifest: Mapping[str, Any], *, complete: bool = False) -> tuple[Manifest, str]:
    """Checksum every file in ``bundle_dir``, write ``manifest.json``, return it and its sha256.

    The document must match ``shared.manifest.ManifestDoc``; ``complete`` (training's
    own bundles) asks for every field of it, so a field the writer forgot fails here.
    """
    files = {}
    for path in sorted(p for p in bundle_dir.iterdir() if p.is_file() and p.name != MANIFEST):
        files[path.name] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    missing = [name for name in REQUIRED_FILES if name not in files]
    if missing:
        raise BundleIntegrityError(f"The bundle in {bundle_dir} lacks {', '.join(missing)}.", path=str(bundle_dir))
    raw = {**manifest, "schema_version": SCHEMA_VERSION, "files": files}
    found = problems(json.loads(dump_json(raw)), complete=complete)
    if found:
        raise BundleIncompatibleError(f"The manifest for {bundle_dir} does not match the schema: {'; '.join(found)}.",
                                      path=str(bundle_dir))
    data = dump_json(raw)
    (bundle_dir / MANIFEST).write_bytes(data)
    return Manifest(json.loads(data)), sha256_bytes(data)  # what a reader will see: plain JSON values


def check_manifest(raw: dict[str, Any], *, where: str) -> Manifest:
    schema = raw.get("schema_version")
    if schema != SCHEMA_VERSION:
        raise BundleIncompatibleError(
            f"The bundle at {where} has schema version {schema!r}, but this code reads version "
            f"{SCHEMA_VERSION}; retrain the model or deploy a matching release.", path=where, schema=schema)
    for field in ("version", "classes", "backbone", "files"):
        if field not in raw:
            raise BundleIncompatibleError(f"The manifest at {where} has no {field!r}; it is not a bundle "
                                          "written by training.fit.", path=where)
    for name in REQUIRED_FILES:
        if name not in raw["files"]:
            raise BundleIncompatibleError(f"The manifest at {where} lists no {name}.", path=where)
    found = problems(raw, where="manifest")
    if found:
        raise BundleIncompatibleError(f"The manifest at {where} does not match the bundle schema "
                                      f"({'; '.join(found[:3])}); it was not written by a matching training.fit.",
                                      path=where)
    for name in raw["files"]:
        # Names are joined onto local folders: only plain file names, never a path.
        if name in ("", ".", "..") or "/" in name or "\\" in name:
            raise BundleIncompatibleError(f"The manifest at {where} lists {name!r}, which is not a plain file "
                                          "name; it was not written by training.fit.", path=where)
    return Manifest(raw)


def _parse_manifest(data: bytes, *, where: str) -> Manifest:
    try:
        raw = json.loads(data)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError alike
        raise BundleIntegrityError(f"The manifest at {where} is not valid JSON; the bundle was damaged. "
                                   "Retrain or restore it.", path=where) from None
    if not isinstance(raw, dict):
        raise BundleIncompatibleError(f"The manifest at {where} is not a JSON object; it is not a bundle "
                                      "written by training.fit.", path=where)
    return check_manifest(raw, where=where)


def verify_dir(bundle_dir: Path, *, manifest_sha256: str | None = None) -> Manifest:
    """Load and fully verify a local bundle; raise a ``BundleError`` naming what is wrong."""
    manifest_path = bundle_dir / MANIFEST
    if not manifest_path.is_file():
        raise BundleNotFoundError(f"No {MANIFEST} in {bundle_dir}; point at a bundle folder written by "
                                  "training.fit.", path=str(bundle_dir))
    data = manifest_path.read_bytes()
    if manifest_sha256 is not None and sha256_bytes(data) != manifest_sha256:
        raise BundleIntegrityError(f"{manifest_path} does not match the checksum in {LATEST}; the bundle "
                                   "was altered after training. Retrain or restore it.", path=str(manifest_path))
    manifest = _parse_manifest(data, where=str(bundle_dir))
    for name, meta in manifest.files.items():
        path = bundle_dir / name
        if not path.is_file():
            raise BundleIntegrityError(f"The bundle in {bundle_dir} lacks {name}, which its manifest lists.",
                                       path=str(path))
        if sha256_file(path) != meta["sha256"]:
            raise BundleIntegrityError(f"{path} does not match its sha256 in the manifest; the bundle was "
                                       "altered or damaged. Retrain or restore it.", path=str(path))
    return manifest


# -- S3 ------------------------------------------------------------------------------


def upload_bundle(store: ObjectStore, bundle_dir: Path, model_prefix: str, version: str) -> str:
    """Upload every file, manifest last, then read each back and compare checksums."""
    prefix = f"{model_prefix}{version}/"
    if next(iter(store.list(prefix)), None) is not None:
        # Never overwrite a bundle: a promoted one would then fail its own checksums.
        raise BundleIntegrityError(f"s3://{store.bucket}/{prefix} already holds a bundle; versions are never "
                                   "overwritten. Run training again for a new version.", bucket=store.bucket,
                                   key=prefix)
    names = sorted(p.name for p in bundle_dir.iterdir() if p.is_file() and p.name != MANIFEST) + [MANIFEST]
    for name in names:
        store.put(prefix + name, (bundle_dir / name).read_bytes(), content_type=_content_type(name))
    for name in names:
        expected = sha256_file(bundle_dir / name)
        if sha256_bytes(store.get(prefix + name).body) != expected:
            raise BundleIntegrityError(f"s3://{store.bucket}/{prefix}{name} does not read back as written; "
                                       "the upload was corrupted. Run training again.",
                                       bucket=store.bucket, key=prefix + name)
    return prefix


def promote(store: ObjectStore, model_prefix: str, version: str, manifest_sha256: str, created_at: str,
            based_on: Mapping[str, Any] | None = None) -> str:
    """Point ``latest.json`` at ``version``; ``based_on`` records what the promotion was decided on."""
    key = f"{model_prefix}{LATEST}"
    doc: dict[str, Any] = {"version": version, "manifest_sha256": manifest_sha256, "created_at": created_at}
    if based_on is not None:
        doc["based_on"] = dict(based_on)
    store.put(key, dump_json(doc), content_type="application/json")
    return key


def resolve_version(store: ObjectStore, model_prefix: str, pinned: str | None) -> tuple[str, str | None]:
    """Return (version, manifest sha256 or None); a pinned version skips ``latest.json``."""
    if pinned:
        return _checked_version(pinned, "MODEL_VERSION"), None
    key = f"{model_prefix}{LATEST}"
    try:
        latest = store.get_json(key)
    except _ABSENT:  # without s3:ListBucket, S3 reports a missing key as 403
        raise BundleNotFoundError(
            f"s3://{store.bucket}/{key} does not exist (or this role may not read it): no model has been "
            "promoted yet. Run `python -m training.fit` first, or pin one with MODEL_VERSION.",
            bucket=store.bucket, key=key) from None
    except ValueError:
        raise BundleIntegrityError(f"s3://{store.bucket}/{key} is not valid JSON; promote a model again.",
                                   bucket=store.bucket, key=key) from None
    if not isinstance(latest, dict) or "version" not in latest:
        raise BundleIncompatibleError(f"s3://{store.bucket}/{key} names no version; promote a model again.",
                                      bucket=store.bucket, key=key)
    return _checked_version(str(latest["version"]), key), latest.get("manifest_sha256")


def _checked_version(version: str, source: str) -> str:
    # The version becomes a folder name under the cache dir and an S3 prefix: no paths.
    if not _VERSION_RE.fullmatch(version):
        raise BundleIncompatibleError(f"{source} gives the version {version!r}, which is not a bundle version "
                                      "(letters, digits, '.', '_' and '-' only).", version=version)
    return version


def fetch_bundle(store: ObjectStore, model_prefix: str, version: str, cache_dir: Path,
                 manifest_sha256: str | None = None, *,
                 names: Collection[str] | None = RUNTIME_FILES) -> tuple[Path, Manifest]:
    """Download a bundle into ``cache_dir/<version>`` (reusing verified files), checking every file.

    ``names`` picks the files (default: what the function runs; ``None``: all of them).
    """
    manifest, manifest_bytes = fetch_manifest(store, model_prefix, version, manifest_sha256)
    return fetch_files(store, model_prefix, version, manifest, manifest_bytes, cache_dir, names=names), manifest


def fetch_manifest(store: ObjectStore, model_prefix: str, version: str,
                   manifest_sha256: str | None = None) -> tuple[Manifest, bytes]:
    """The bundle's manifest from S3, checked against ``latest.json``'s checksum when given."""
    key = f"{model_prefix}{version}/{MANIFEST}"
    try:
        manifest_bytes = store.get(key).body
    except _ABSENT:
        raise BundleNotFoundError(f"s3://{store.bucket}/{key} does not exist (or this role may not read it); "
                                  f"check MODEL_VERSION or {LATEST}.", bucket=store.bucket, key=key) from None
    if manifest_sha256 is not None and sha256_bytes(manifest_bytes) != manifest_sha256:
        raise BundleIntegrityError(f"s3://{store.bucket}/{key} does not match the checksum in {LATEST}; the "
                                   "bundle was altered. Retrain or restore it.", bucket=store.bucket, key=key)
    return _parse_manifest(manifest_bytes, where=f"s3://{store.bucket}/{model_prefix}{version}/"), manifest_bytes


def load_pinned(store: ObjectStore, model_prefix: str, version: str, manifest_sha256: str | None, cache_dir: Path,
                *, threads: int | None = None, background: bool = False) -> Classifier:
    """The classifier of bundle ``version``, once something has resolved it (``resolve_version``, or a batch
    driver that fixes the version and manifest sha256 for every task).

    The manifest is read and checked now, so a missing, tampered or incompatible bundle
    raises here.  The files (each checked, cached in ``cache_dir/<version>``) and the ONNX
    sessions come before this returns, or, with ``background``, on a thread: the function's
    cold start overlaps them with its first downloads (``Classifier.in_background``).
    """
    from shared.runtime import Classifier  # imported here: shared.runtime imports this module

    manifest, manifest_bytes = fetch_manifest(store, model_prefix, version, manifest_sha256)

    def files() -> Path:
        return fetch_files(store, model_prefix, version, manifest, manifest_bytes, cache_dir)

    if background:
        return Classifier.in_background(manifest, files, threads=threads)
    return Classifier(files(), manifest, threads=threads)


def fetch_files(store: ObjectStore, model_prefix: str, version: str, manifest: Manifest, manifest_bytes: bytes,
                cache_dir: Path, *, names: Collection[str] | None = RUNTIME_FILES) -> Path:
    """Make ``cache_dir/<version>`` hold the bundle's files named in ``names``, each checked.

    The files come down in parallel and are hashed as they stream, so each byte is read
    once; a file already in the cache (a re-used container) is hashed, not fetched.  The
    manifest is written last.
    """
    target = cache_dir / version
    target.mkdir(parents=True, exist_ok=True)
    _remove_stale_parts(target)
    prefix = f"{model_prefix}{version}/"
    wanted = [(name, meta["sha256"]) for name, meta in manifest.files.items() if names is None or name in names]
    with ThreadPoolExecutor(max_workers=max(1, min(FETCH_THREADS, len(wanted)))) as pool:
        list(pool.map(lambda item: _ensure_file(store, prefix + item[0], target / item[0], item[1]), wanted))
    _atomic_write(target / MANIFEST, manifest_bytes)
    return target


def _ensure_file(store: ObjectStore, key: str, path: Path, sha256: str) -> None:
    """Keep ``path`` if it hashes to ``sha256``; else stream ``key`` into it, hashing on the way."""
    if path.is_file() and sha256_file(path) == sha256:
        return
    with _replacing(path) as tmp:
        digest = hashlib.sha256()
        try:
            store.download(key, tmp, digest=digest)
        except _ABSENT:
            raise BundleIntegrityError(f"s3://{store.bucket}/{key} is listed in the bundle's manifest but cannot "
                                       "be read; the bundle is incomplete. Retrain or restore it.",
                                       bucket=store.bucket, key=key) from None
        if digest.hexdigest() != sha256:
            raise BundleIntegrityError(f"s3://{store.bucket}/{key} does not match its sha256 in the manifest; the "
                                       "bundle was altered or damaged. Retrain or restore it.",
                                       bucket=store.bucket, key=key)


def _remove_stale_parts(folder: Path) -> None:
    """Remove downloads that a killed process left half-written (a Lambda timeout, say).

    ``/tmp`` outlives a restarted runtime; without this, repeated timeouts could fill it.
    A part younger than PART_MAX_AGE_S may belong to another process's fetch and is kept.
    """
    cutoff = time.time() - PART_MAX_AGE_S
    for part in folder.glob(f"{PART_PREFIX}*"):
        with contextlib.suppress(OSError):
            if part.stat().st_mtime < cutoff:
                part.unlink()


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[Path]:
    """A temporary file beside ``path`` that becomes ``path`` if the block succeeds, else goes.

    Readers never see a half-written file, only the old one or the new one.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=PART_PREFIX)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _atomic_write(path: Path, data: bytes) -> None:
    with _replacing(path) as tmp:
        tmp.write_bytes(data)


def _content_type(name: str) -> str:
    return {".json": "application/json", ".md": "text/markdown; charset=utf-8", ".png": "image/png",
            ".txt": "text/plain; charset=utf-8"}.get(Path(name).suffix, "application/octet-stream")
