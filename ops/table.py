"""The batch job's Parquet results table, ``tables/results/model_version=<V>/...``, read with
pyarrow's S3 filesystem.

Columns are matched by name with a few aliases, so a column the batch job adds later does
no harm and a missing optional one reads as empty.  Where the table is absent or cannot
be read, :func:`read_table` returns None and ops falls back to the result objects.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from ops.records import Record
from shared.cameras import CameraRule
from shared.clock import parse_time
from shared.config import S3Settings

TABLE_PREFIX = "tables/results/"
ALIASES = {
    "key": ("key", "source_key", "input_key"),
    "etag": ("etag", "source_etag", "ETag"),
    "status": ("status",),
    "label": ("label",),
    "probability": ("probability",),
    "error_type": ("error_type",),
    "error_message": ("error_message",),
    "model_version": ("model_version",),
    "processed_at": ("processed_at", "scored_at", "finished_at", "timestamp"),
    "positive_probability": ("positive_probability",),
    "threshold": ("threshold",),
    "positive_class": ("positive_class",),
}

log = logging.getLogger(__name__)


def filesystem(s3: S3Settings) -> Any:
    """The batch job's own pyarrow S3 filesystem (the same endpoint, region and retries it writes with)."""
    from batch.table import filesystem as batch_filesystem

    return batch_filesystem(s3)


def _rows(fs: Any, bucket: str, prefix: str) -> list[dict[str, Any]] | None:
    import pyarrow.dataset as ds
    from pyarrow import fs as pafs

    base = f"{bucket}/{prefix.rstrip('/')}"
    info = fs.get_file_info(base)
    if info.type != pafs.FileType.Directory:
        return None
    dataset = ds.dataset(base, filesystem=fs, format="parquet", partitioning="hive")
    names = set(dataset.schema.names)
    columns = {field: next((a for a in aliases if a in names), None) for field, aliases in ALIASES.items()}
    if columns["key"] is None:
        log.warning("the results table at s3://%s has no key column; ignoring it", base)
        return None
    wanted = sorted({c for c in columns.values() if c is not None})
    table = dataset.to_table(columns=wanted)
    out = []
    for row in table.to_pylist():
        out.append({field: row.get(col) if col else None for field, col in columns.items()})
    return out


def read_table(s3: S3Settings, bucket: str, prefix: str = TABLE_PREFIX) -> list[dict[str, Any]] | None:
    """Every row (all model versions), or None when there is no readable table."""
    try:
        return _rows(filesystem(s3), bucket, prefix)
    except ImportError:
        log.warning("pyarrow is not installed (the batch extra); reading the result objects instead")
        return None
    except (OSError, ValueError) as exc:  # pyarrow raises OSError subclasses for S3 faults
        log.warning("the results table under s3://%s/%s could not be read (%s); using the result objects",
                    bucket, prefix, exc)
        return None


def newest_by_key(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The newest row per input key (a re-uploaded or re-scored frame counts once)."""
    newest: dict[str, dict[str, Any]] = {}
    for row in rows:
        key = str(row["key"])
        when = parse_time(row.get("processed_at"))
        row["processed_at"] = when
        held = newest.get(key)
        if held is None or (when is not None and (held["processed_at"] is None or when > held["processed_at"])):
            newest[key] = row
    return newest


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def from_row(row: dict[str, Any], result_key: str, rule: CameraRule) -> Record:
    """A table row; a clip's row carries its dominant label and that label's share (as its result)."""
    from functions.events import is_video_key

    key = str(row["key"])
    processed: datetime | None = row.get("processed_at")
    return Record(
        key=key, result_key=result_key, camera=rule.camera(key), status=str(row.get("status") or "unknown"),
        kind="video" if is_video_key(key) else "frame", label=row.get("label"),
        probability=_float(row.get("probability")),
        positive_probability=_float(row.get("positive_probability")), threshold=_float(row.get("threshold")),
        positive_class=row.get("positive_class"), error_type=row.get("error_type"),
        error_message=row.get("error_message"), processed_at=processed,
        model_version=None if row.get("model_version") is None else str(row["model_version"]),
        latency_ms=None, source_etag=row.get("etag"))
