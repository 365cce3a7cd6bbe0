"""The driver's plan: what to score (listing or a key file), minus what is done, in task-sized slices.

Only keys, ETags, sizes and cameras travel to the executors, never pixels: pushing
pixels through Arrow costs about 2 core-ms a row and nears Arrow's 2 GiB batch limit.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import io
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

from functions.results import result_key_for
from functions.service import is_final
from shared.cameras import CameraRule
from shared.config import FunctionSettings
from shared.errors import ConfigError
from shared.listing import Listed, list_objects
from shared.storage import ObjectStore

WAVES = 4  # tasks per core in a job smaller than --frames-per-task allows
MIN_FRAMES_PER_TASK = 50  # below this, a task's fixed costs (Arrow set-up, its Parquet part) start to show
_ETAG_RE = re.compile(r'^"?[0-9a-fA-F]{32}(-\d+)?"?$')


@dataclasses.dataclass(frozen=True)
class Item:
    """One frame to score: what a DataFrame row carries."""

    key: str
    etag: str | None
    size: int | None
    camera: str


@dataclasses.dataclass(frozen=True)
class KeyEntry:
    """A key from a key file, with its ETag and size when the file has them (``fill_etags`` adds them)."""

    key: str
    etag: str | None
    size: int | None


# -- listing ------------------------------------------------------------------------


def list_frames(store: ObjectStore, prefix: str, *, since: datetime | None = None, until: datetime | None = None,
                threads: int = 16) -> list[Listed]:
    """Every object under ``prefix`` (folder markers aside) stored within [since, until), sorted by key.

    ``shared.listing.list_objects``: each camera prefix is paginated on its own thread, so a
    thousand cameras do not wait on one continuation chain.
    """
    found = list_objects(store.client, store.bucket, prefix, workers=threads)
    if since is None and until is None:
        return found
    return [item for item in found if _within(item.last_modified, since, until)]


def _within(moment: datetime | None, since: datetime | None, until: datetime | None) -> bool:
    if moment is None:
        return since is None and until is None
    return (since is None or moment >= since) and (until is None or moment < until)


# -- key files ----------------------------------------------------------------------


def read_keys_file(path: Path, bucket: str) -> list[KeyEntry]:
    """Keys from a plain list (one a line), an S3 Inventory CSV (optionally gzipped) or a Parquet file.

    Inventory CSV keys are URL-encoded (S3 writes them so); Parquet ones are not.  Rows
    naming another bucket are left out.  ETag and size are taken when the file has them.
    """
    name = path.name.lower()
    if name.endswith(".parquet"):
        return _dedupe(_parquet_keys(path, bucket))
    raw = path.read_bytes()
    text = (gzip.decompress(raw) if name.endswith(".gz") else raw).decode("utf-8-sig")
    if name.endswith((".csv", ".csv.gz")):
        return _dedupe(_csv_keys(text, bucket))
    return _dedupe(KeyEntry(line.strip(), None, None) for line in text.splitlines()
                   if line.strip() and not line.lstrip().startswith("#"))


def _dedupe(items: Iterable[KeyEntry]) -> list[KeyEntry]:
    seen: dict[str, KeyEntry] = {}
    for item in items:
        seen.setdefault(item.key, item)
    return sorted(seen.values(), key=lambda item: item.key)


def _parquet_keys(path: Path, bucket: str) -> Iterator[KeyEntry]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    cols = {c.lower(): c for c in table.column_names}
    if "key" not in cols:
        raise ConfigError(f"{path} has no 'key' column; give an S3 Inventory Parquet file or a plain key list.")
    data = table.to_pydict()

    def get(name: str) -> list[Any]:
        return list(data[cols[name]]) if name in cols else [None] * table.num_rows

    etag_col = "e_tag" if "e_tag" in cols else "etag"
    for b, key, etag, size in zip(get("bucket"), get("key"), get(etag_col), get("size"), strict=True):
        if key and (b is None or b == bucket):
            yield KeyEntry(str(key), str(etag).strip('"') if etag else None, int(size) if size is not None else None)


def _csv_keys(text: str, bucket: str) -> Iterator[KeyEntry]:
    rows = [row for row in csv.reader(io.StringIO(text)) if row]
    if rows and any(cell.strip().lower() == "key" for cell in rows[0]):  # a header: take columns by name
        header = [cell.strip().lower() for cell in rows[0]]
        for row in rows[1:]:
            cells = dict(zip(header, row, strict=False))
            if cells.get("bucket") in (None, "", bucket) and cells.get("key"):
                tag, length = cells.get("etag") or cells.get("e_tag"), cells.get("size")
                yield KeyEntry(cells["key"], tag.strip('"') if tag else None, int(length) if length else None)
        return
    for row in rows:  # S3 Inventory: Bucket, Key (URL-encoded), then the optional fields in the manifest's order
        if len(row) < 2 or row[0] != bucket:
            continue
        size = next((int(c) for c in row[2:] if c.isdigit()), None)
        etag = next((c.strip('"') for c in row[2:] if _ETAG_RE.match(c)), None)
        yield KeyEntry(unquote_plus(row[1]), etag, size)


def fill_etags(store: ObjectStore, items: Sequence[KeyEntry], threads: int = 32) -> tuple[list[KeyEntry], list[str]]:
    """HEAD the items that lack an ETag (a plain key list); return them and the keys that are gone."""
    def head(item: KeyEntry) -> KeyEntry | None:
        if item.etag is not None and item.size is not None:
            return item
        info = store.head(item.key)
        return None if info is None else KeyEntry(item.key, info.etag, info.size)

    with ThreadPoolExecutor(max_workers=threads) as pool:
        heads = list(pool.map(head, items))
    return [h for h in heads if h is not None], [i.key for i, h in zip(items, heads, strict=True) if h is None]


# -- resume -------------------------------------------------------------------------


def is_done(row: Mapping[str, Any], etag: str | None) -> bool:
    """Whether a table row settles a frame: same ETag, and a final result (ok, or bad input).

    Storage errors and failures are not final (the function's own rule), so they are tried again.
    """
    if etag is None or row.get("etag") != etag:
        return False
    error = {"type": row.get("error_type")} if row.get("error_type") else None
    return is_final({"status": row.get("status"), "error": error})


def drop_done(items: Sequence[Item], newest: Mapping[str, Mapping[str, Any]]) -> tuple[list[Item], int]:
    """The items still to score, and how many the table already settles."""
    todo = [item for item in items if not (item.key in newest and is_done(newest[item.key], item.etag))]
    return todo, len(items) - len(todo)


# -- partitions ---------------------------------------------------------------------


def slices(n_items: int, frames_per_task: int, parallelism: int, waves: int = WAVES) -> int:
    """How many tasks: at most ``frames_per_task`` frames each; for a job smaller than that, a few waves of
    tasks per core (progress to report, and no core idle behind one slow task) of at least
    MIN_FRAMES_PER_TASK frames; and one task per core while frames last."""
    if n_items == 0:
        return 0
    needed = math.ceil(n_items / frames_per_task)
    wanted = min(max(needed, parallelism * waves), max(parallelism, needed, math.ceil(n_items / MIN_FRAMES_PER_TASK)))
    return min(n_items, wanted)


def contiguous(items: Sequence[Item], n: int) -> list[list[Item]]:
    """``n`` runs of consecutive items (sorted by key), sizes differing by at most one."""
    base, extra = divmod(len(items), n)
    out, start = [], 0
    for i in range(n):
        end = start + base + (1 if i < extra else 0)
        out.append(list(items[start:end]))
        start = end
    return out


def to_items(listed: Iterable[Listed | KeyEntry], cameras: CameraRule,
             settings: FunctionSettings | None = None) -> tuple[list[Item], int]:
    """Items the function would process (sorted by camera, then key), and how many keys were left out.

    Whether a key is in scope is the function's own rule (``result_key_for``: under the input
    prefix, not a folder marker), with ``settings`` (default: the function's, reading the
    cameras' input prefix).  The camera comes from :mod:`shared.cameras`, the rule ``python -m ops`` uses too.
    """
    settings = settings or FunctionSettings(input_prefix=cameras.input_prefix)
    inside, outside = [], 0
    for item in listed:
        if result_key_for(settings, item.key) is None:
            outside += 1
            continue
        inside.append(Item(item.key, item.etag, item.size, cameras.camera(item.key)))
    return sorted(inside, key=lambda i: (i.camera, i.key)), outside
