"""``ops missing``: inputs with no result, or whose result predates them (re-uploaded since).

These are the frames that were lost or are stuck.  An input younger than the grace period
(``--older-than``) may simply still be in flight, so it is counted as pending, not missing.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from typing import Any

from ops.config import OpsConfig
from ops.load import result_cache
from ops.records import iso
from ops.source import ResultFetcher, list_results
from shared.listing import Listed, list_objects

NO_RESULT = "no result"
OLDER = "result older than the input"
OTHER_BYTES = "result is for other bytes"


@dataclasses.dataclass(frozen=True)
class Missing:
    key: str
    camera: str
    reason: str
    uploaded_at: datetime
    result_at: datetime | None
    result_key: str

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "camera": self.camera, "reason": self.reason, "uploaded_at": iso(self.uploaded_at),
                "result_at": iso(self.result_at), "result_key": self.result_key}


def _verdict(inp: Listed, result: Listed | None, doc: Any) -> str | None:
    if result is None:
        return NO_RESULT
    if result.last_modified < inp.last_modified:
        return OLDER
    etag = (doc or {}).get("source", {}).get("etag") if isinstance(doc, dict) else None
    if etag and etag != inp.etag:  # same second, or a clock that ties: the document knows the bytes
        return OTHER_BYTES
    return None


def find_missing(config: OpsConfig, client: Any, *, older_than: timedelta) -> dict[str, Any]:
    now = config.clock()
    cache = result_cache(config)  # loads while the listings run
    inputs = list_objects(client, config.bucket, config.input_prefix)  # folder markers aside
    results = {o.key: o for o in list_results(client, config.bucket, config.results_prefix)}
    pairs = [(inp, config.result_key(inp.key)) for inp in inputs]
    candidates = [results[rk] for inp, rk in pairs if rk in results and results[rk].last_modified >= inp.last_modified]
    docs = ResultFetcher(client, config.bucket, cache, config.workers).documents(candidates)
    cache.save(results[k].etag for k in results)
    missing, pending = [], 0
    for inp, rk in pairs:
        if rk is None:
            continue
        reason = _verdict(inp, results.get(rk), docs.get(rk))
        if reason is None:
            continue
        if now - inp.last_modified < older_than:
            pending += 1
            continue
        result = results.get(rk)
        missing.append(Missing(inp.key, config.camera.camera(inp.key), reason, inp.last_modified,
                               result.last_modified if result else None, rk))
    missing.sort(key=lambda m: (m.uploaded_at, m.key))
    return {"inputs": len(inputs), "missing": missing, "pending": pending,
            "older_than_s": older_than.total_seconds(), "checked_at": now}
