"""Where the results come from: the result objects (listed, fetched concurrently, cached by
ETag), or the batch job's Parquet table when it exists and the window is large.

A result object's ETag changes whenever its bytes do, so a document cached under its ETag
never goes stale: a second run lists (1 request per 1,000 objects) and GETs only what changed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ops.records import slim
from shared.listing import Listed, list_objects
from shared.storage import translate

CACHE_FORMAT = 1


def list_results(client: Any, bucket: str, results_prefix: str, *, workers: int = 8,
                 on_folder: Callable[[list[Listed]], None] | None = None) -> list[Listed]:
    """The result documents (``.json``), not the annotated clips beside them (``shared.listing.list_objects``)."""
    def results_only(objs: list[Listed]) -> None:
        assert on_folder is not None
        on_folder([o for o in objs if o.key.endswith(".json")])

    listed = list_objects(client, bucket, results_prefix, workers=workers,
                          on_folder=None if on_folder is None else results_only)
    return [o for o in listed if o.key.endswith(".json")]


def default_cache_dir(env: Mapping[str, str]) -> Path:
    if env.get("OPS_CACHE_DIR"):
        return Path(env["OPS_CACHE_DIR"])
    base = Path(env["XDG_CACHE_HOME"]) if env.get("XDG_CACHE_HOME") else Path.home() / ".cache"
    return base / "cctv-ops"


class DocumentCache:
    """Result documents by ETag, one JSON file per bucket and prefix (one read, one write per run).

    One file rather than one per object: 10,000 small files cost more to open than one
    10 MB file costs to parse.  Entries not seen in the latest listing are dropped on save.
    """

    def __init__(self, root: Path | None, scope: str) -> None:
        digest = hashlib.sha256(scope.encode()).hexdigest()[:20]
        self.path = None if root is None else root / f"results-{digest}.json"
        self.hits = 0
        self._dirty = False
        # Read on a thread: a cached run's other cost is the listing, which can go on meanwhile.
        self._loading = threading.Thread(target=self._load, name="ops-cache-load", daemon=True)
        self._entries: dict[str, Any] = {}
        self._loading.start()

    def _load(self) -> None:
        if self.path is not None and self.path.is_file():
            with contextlib.suppress(OSError, ValueError):
                data = json.loads(self.path.read_text(encoding="utf-8"))
                if data.get("format") == CACHE_FORMAT:
                    self._entries = data["entries"]

    @property
    def entries(self) -> dict[str, Any]:
        self._loading.join()
        return self._entries

    def get(self, etag: str) -> Any:
        doc = self.entries.get(etag)
        if doc is not None:
            self.hits += 1
        return doc

    def put(self, etag: str, doc: Any) -> None:
        self.entries[etag] = doc
        self._dirty = True

    def save(self, keep: Iterable[str]) -> None:
        if self.path is None:
            return
        keep = set(keep)
        if not self._dirty and keep >= self.entries.keys():
            return
        entries = {k: v for k, v in self.entries.items() if k in keep}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".results-", suffix=".part")
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump({"format": CACHE_FORMAT, "entries": entries}, out, ensure_ascii=False, separators=(",", ":"))
        os.replace(tmp, self.path)  # readers never see half a file


class ResultFetcher:
    """Concurrent GETs of result documents, through the cache."""

    def __init__(self, client: Any, bucket: str, cache: DocumentCache, workers: int = 16) -> None:
        self.client, self.bucket, self.cache, self.workers = client, bucket, cache, workers
        self.fetched = 0

    def _get(self, obj: Listed) -> Any:
        from botocore import exceptions as bce

        try:
            body = self.client.get_object(Bucket=self.bucket, Key=obj.key)["Body"].read()
        except (bce.BotoCoreError, bce.ClientError) as exc:
            error = translate(exc, bucket=self.bucket, key=obj.key)
            if type(error).__name__ == "ObjectNotFoundError":
                return None  # deleted since the listing
            raise error from exc
        try:
            return slim(json.loads(body))
        except ValueError:
            return {"status": "unreadable", "error": {"type": "UnreadableResult",
                                                       "message": f"{obj.key} is not valid JSON."}}

    def documents(self, objects: list[Listed]) -> dict[str, Any]:
        """Result key -> document, for every listed object still present."""
        out: dict[str, Any] = {}
        todo = []
        for obj in objects:
            doc = self.cache.get(obj.etag)
            if doc is None:
                todo.append(obj)
            else:
                out[obj.key] = doc
        if todo:
            with ThreadPoolExecutor(max_workers=min(self.workers, len(todo))) as pool:
                for obj, doc in zip(todo, pool.map(self._get, todo), strict=True):
                    if doc is not None:
                        out[obj.key] = doc
                        self.cache.put(obj.etag, doc)
            self.fetched += len(todo)
        return out


