"""Results in, :class:`~ops.records.Record` objects out, from the cheapest good source."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone
from typing import Any

from ops.config import OpsConfig
from ops.records import Record, from_document
from ops.source import DocumentCache, ResultFetcher, list_results
from ops.table import from_row, newest_by_key, read_table
from shared.listing import Listed

# A result object is written just after its processed_at; listing times within this of a
# window's start may still hold results inside it.
LISTING_SLACK = timedelta(minutes=5)
# A table row stands for a result object written up to this long after the row's time
# (the batch job writes the JSON right after scoring); a later object was rewritten since.
TABLE_TOLERANCE = timedelta(minutes=2)
# Auto mode reads the table only when at least this many results would otherwise be fetched.
TABLE_MIN_FETCH = 2000
_UNDATED = datetime.min.replace(tzinfo=timezone.utc)


@dataclasses.dataclass
class Loaded:
    records: list[Record]
    listed: list[Listed]
    fetched: int = 0
    cached: int = 0
    from_table: int = 0

    def stats(self) -> dict[str, int]:
        return {"results_listed": len(self.listed), "fetched": self.fetched, "from_cache": self.cached,
                "from_table": self.from_table}


def result_cache(config: OpsConfig) -> DocumentCache:
    """The local cache of result documents for this endpoint, bucket and results prefix."""
    scope = f"{config.s3.endpoint_url or 'aws'}|{config.bucket}|{config.results_prefix}"
    return DocumentCache(config.cache_dir, scope)


def _table_rows(config: OpsConfig, to_fetch: int) -> dict[str, dict[str, Any]]:
    """Result key -> newest table row, when the table should and can be used."""
    if config.source == "objects" or (config.source == "auto" and to_fetch < TABLE_MIN_FETCH):
        return {}
    rows = read_table(config.s3, config.bucket, config.table_prefix)
    if not rows:
        return {}
    out = {}
    for key, row in newest_by_key(rows).items():
        result_key = config.result_key(key)
        if result_key is not None:
            out[result_key] = row
    return out


def _fresh(row: dict[str, Any] | None, obj: Listed) -> bool:
    when = None if row is None else row.get("processed_at")
    return when is not None and when + TABLE_TOLERANCE >= obj.last_modified


def load(config: OpsConfig, client: Any, *, since: datetime | None = None,
         until: datetime | None = None) -> Loaded:
    cache = result_cache(config)  # loads while the listing runs
    # Result key -> record from the cached document for the listed ETag, made as each folder's
    # listing arrives: that work then overlaps the listing of the other folders.
    early: dict[str, Record] = {}

    def from_cache(objs: list[Listed]) -> None:
        for obj in objs:
            doc = cache.entries.get(obj.etag) if _listed_in(obj, since) else None
            if doc is not None:
                early[obj.key] = from_document(doc, obj.key, config.camera)

    everything = list_results(client, config.bucket, config.results_prefix, on_folder=from_cache)
    listed = [o for o in everything if _listed_in(o, since)]
    rows = _table_rows(config, sum(1 for o in listed if o.key not in early))
    records: list[Record] = []
    todo = []
    cached = 0
    for obj in listed:
        row = rows.get(obj.key)
        if _fresh(row, obj):
            records.append(from_row(row, obj.key, config.camera))  # type: ignore[arg-type]
        elif obj.key in early:
            records.append(early[obj.key])
            cached += 1
        else:
            todo.append(obj)
    fetcher = ResultFetcher(client, config.bucket, cache, config.workers)
    docs = fetcher.documents(todo)
    cache.save(o.etag for o in everything)
    records += [from_document(docs[o.key], o.key, config.camera) for o in todo if o.key in docs]
    records = [r for r in records if _within(r, since, until)]
    _newest_first(records)
    return Loaded(records, listed, fetched=fetcher.fetched, cached=cached + cache.hits,
                  from_table=len(listed) - len(todo) - cached)


def _listed_in(obj: Listed, since: datetime | None) -> bool:
    return since is None or obj.last_modified >= since - LISTING_SLACK


def _newest_first(records: list[Record]) -> None:
    """Newest first, ties and undated records (last) by key: two stable sorts on plain keys,
    which cost a tenth of one sort on a tuple with ``datetime.timestamp()`` in it."""
    records.sort(key=lambda r: r.key)
    records.sort(key=lambda r: r.processed_at or _UNDATED, reverse=True)  # reverse=True keeps ties in order


def _within(record: Record, since: datetime | None, until: datetime | None) -> bool:
    when = record.processed_at
    if when is None:
        return since is None and until is None
    return (since is None or when >= since) and (until is None or when < until)
