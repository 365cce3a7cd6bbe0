"""The Parquet results table and the per-camera summary.

``s3://BUCKET/tables/results/model_version=<V>/part-<run id>-<task>.parquet``: one row
per input a task was given.  The model version is the Hive partition (the folder), not a
column in the files, so pyarrow, DuckDB and Spark all read it back as ``model_version``.
A task writes its part under a name made of the run id and its partition number, so a
retried task replaces its own part and a killed job keeps the parts that finished.  The
table is written with pyarrow's S3 filesystem: Spark's s3a connector needs hadoop-aws
jars that the pyspark wheel lacks.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any
from urllib.parse import urlparse

from functions.service import Outcome, Status
from shared.clock import parse_time
from shared.config import S3Settings

PARTITION = "model_version"
# Only what resume and the summary need; the rest stays in the files.
NEWEST_COLUMNS = ("key", "camera", "etag", "status", "label", "error_type", "reused", "run_id", "scored_at")


def class_columns(classes: Sequence[str]) -> dict[str, str]:
    """Class name -> its probability column (``prob_<class>``, made safe for SQL and unique)."""
    out: dict[str, str] = {}
    for cls in classes:
        base = "prob_" + (re.sub(r"[^0-9A-Za-z_]+", "_", cls).strip("_").lower() or "class")
        name, n = base, 2
        while name in out.values():
            name, n = f"{base}_{n}", n + 1
        out[cls] = name
    return out


def schema(classes: Sequence[str]) -> Any:
    import pyarrow as pa

    ts = pa.timestamp("ms", tz="UTC")
    return pa.schema([
        ("key", pa.string()), ("camera", pa.string()), ("etag", pa.string()), ("size", pa.int64()),
        ("status", pa.string()), ("label", pa.string()), ("probability", pa.float64()),
        *[(col, pa.float64()) for col in class_columns(classes).values()],
        ("error_type", pa.string()), ("error_message", pa.string()), ("reused", pa.bool_()),
        ("attempts", pa.int16()), ("result_key", pa.string()), ("run_id", pa.string()),
        ("processed_at", ts), ("scored_at", ts), ("worker", pa.string()),
    ])


def row_for(outcome: Outcome, camera: str, classes: Sequence[str], *, run_id: str, scored_at: datetime,
            attempts: int, worker: str) -> dict[str, Any]:
    """The table row of one input, from the core's outcome (and the result it wrote or found)."""
    result = outcome.result
    status, reused = outcome.status.value, False
    if outcome.status is Status.SKIPPED and result is not None:
        status, reused = str(result.get("status")), True  # an equal result was there already
    source = (result or {}).get("source") or {}
    error = (result or {}).get("error") or _error_of(outcome.error)
    probabilities = (result or {}).get("probabilities") or {}
    columns = class_columns(classes)
    label, probability = (result or {}).get("label"), (result or {}).get("probability")
    summary = (result or {}).get("summary") or {}
    if (result or {}).get("kind") == "video" and summary:  # a clip: its dominant label and that label's share
        label = summary.get("dominant_label")
        probability = (summary.get("label_share") or {}).get(label)
    return {
        "key": outcome.ref.key, "camera": camera, "etag": source.get("etag") or outcome.ref.etag,
        "size": source.get("size") if source.get("size") is not None else outcome.ref.size,
        "status": status, "label": label, "probability": probability,
        **{columns[cls]: probabilities.get(cls) for cls in classes},
        "error_type": error.get("type") if error else None, "error_message": error.get("message") if error else None,
        "reused": reused, "attempts": attempts, "result_key": outcome.result_key, "run_id": run_id,
        "processed_at": parse_time((result or {}).get("processed_at")), "scored_at": scored_at, "worker": worker,
    }


def _error_of(exc: BaseException | None) -> dict[str, str] | None:
    if exc is None:
        return None
    return {"type": str(getattr(exc, "kind", type(exc).__name__)), "message": str(exc)[:500]}


# -- S3 -----------------------------------------------------------------------------


def filesystem(s3: S3Settings) -> Any:
    """pyarrow's S3 filesystem for the same store boto3 talks to (``endpoint_override`` for moto, MinIO, Yandex)."""
    from pyarrow import fs

    # allow_delayed_open: an output stream under the upload part size (10 MB; a part of 2,000 rows is about
    # 130 kB) goes up in one PUT when it closes, so it is whole or absent.  Without it, opening the stream starts
    # a multipart upload, and a task killed mid-write leaves that upload behind (S3 keeps it, unlisted and
    # billed, until someone aborts it).
    kwargs: dict[str, Any] = {"region": s3.region or "us-east-1", "allow_delayed_open": True,
                              "retry_strategy": fs.AwsStandardS3RetryStrategy(max_attempts=5)}
    if s3.endpoint_url:
        url = urlparse(s3.endpoint_url)
        kwargs.update(endpoint_override=url.netloc + url.path.rstrip("/"), scheme=url.scheme or "https")
    return fs.S3FileSystem(**kwargs)


def version_path(bucket: str, table: str, version: str) -> str:
    return f"{bucket}/{table}{PARTITION}={version}"


def part_path(bucket: str, table: str, version: str, run_id: str, partition: int) -> str:
    return f"{version_path(bucket, table, version)}/part-{run_id}-{partition:05d}.parquet"


def write_part(fs: Any, path: str, rows: Sequence[Mapping[str, Any]], classes: Sequence[str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pylist(list(rows), schema=schema(classes))
    pq.write_table(table, path, filesystem=fs, compression="zstd")


def read_newest(fs: Any, bucket: str, table: str, version: str) -> Any:
    """The newest row per key of one model version, as a pandas DataFrame (empty if no table yet)."""
    import pandas as pd
    import pyarrow.dataset as ds
    from pyarrow import fs as pafs

    base = version_path(bucket, table, version)
    if fs.get_file_info(base).type == pafs.FileType.NotFound:
        return pd.DataFrame(columns=list(NEWEST_COLUMNS))
    frame = ds.dataset(base, filesystem=fs, format="parquet").to_table(columns=list(NEWEST_COLUMNS)).to_pandas()
    if frame.empty:
        return frame
    # A re-uploaded frame has several rows: only the newest counts (ties: the later run id).
    frame = frame.sort_values(["scored_at", "run_id"], kind="stable")
    return frame.drop_duplicates("key", keep="last").set_index("key", drop=False)


def newest_by_key(frame: Any) -> dict[str, dict[str, Any]]:
    if frame.empty:
        return {}
    return {str(k): row for k, row in zip(frame["key"], frame.to_dict("records"), strict=True)}


# -- the summary --------------------------------------------------------------------


def summarise(listed: Mapping[str, str], newest: Mapping[str, Mapping[str, Any]], run_id: str,
              elapsed_s: float) -> dict[str, Any]:
    """Per camera and in total: counts by status, by label and by error type, over the newest row per key.

    ``listed`` (key -> camera) is this run's scope; a listed key with no row at all (its
    task died) counts as ``failed``, never as nothing.
    """
    cameras: dict[str, dict[str, Any]] = {}
    for key, camera in listed.items():
        _count(cameras.setdefault(camera, _empty()), newest.get(key), run_id)
    total = _empty()
    for stats in cameras.values():
        _merge(total, stats)
    for stats in [*cameras.values(), total]:
        stats["frames_per_s"] = round(stats["scored_this_run"] / elapsed_s, 2) if elapsed_s > 0 else None
        for name in ("labels", "error_types"):
            stats[name] = dict(sorted(stats[name].items()))
    return {"cameras": dict(sorted(cameras.items())), "total": total}


def _empty() -> dict[str, Any]:
    return {"frames": 0, "ok": 0, "error": 0, "failed": 0, "skipped": 0, "scored_this_run": 0, "reused": 0,
            "labels": Counter(), "error_types": Counter()}


def _count(stats: dict[str, Any], row: Mapping[str, Any] | None, run_id: str) -> None:
    stats["frames"] += 1
    if row is None:
        stats["failed"] += 1
        stats["error_types"]["NotScored"] += 1
        return
    status = str(row.get("status"))
    # "ignored" (an input the core leaves alone) is no failure; anything else unknown is.
    stats[{"ok": "ok", "error": "error", "skipped": "skipped", "ignored": "skipped"}.get(status, "failed")] += 1
    if status == "ok" and row.get("label"):
        stats["labels"][str(row["label"])] += 1
    if row.get("error_type"):
        stats["error_types"][str(row["error_type"])] += 1
    if row.get("run_id") == run_id:
        stats["scored_this_run"] += 1
        stats["reused"] += bool(row.get("reused"))


def _merge(total: dict[str, Any], stats: Mapping[str, Any]) -> None:
    for name, value in stats.items():
        if isinstance(value, Counter):
            total[name].update(value)
        else:
            total[name] += value


def format_summary(summary: Mapping[str, Any]) -> str:
    """The summary as a fixed-width table, one line per camera and a total."""
    head = (f"{'camera':<24} {'frames':>7} {'ok':>7} {'error':>6} {'failed':>6} {'this run':>8} {'reused':>6} "
            f"{'fr/s':>7}  labels")
    lines = [head]
    rows: Iterable[tuple[str, Mapping[str, Any]]] = [*summary["cameras"].items(), ("TOTAL", summary["total"])]
    for camera, s in rows:
        labels = ", ".join(f"{k} {v}" for k, v in s["labels"].items())
        errors = ", ".join(f"{k} {v}" for k, v in s["error_types"].items())
        errors = f"; errors: {errors}" if errors else ""
        fps = "-" if s["frames_per_s"] is None else f"{s['frames_per_s']:.1f}"
        lines.append(f"{camera[:24]:<24} {s['frames']:>7} {s['ok']:>7} {s['error']:>6} {s['failed']:>6} "
                     f"{s['scored_this_run']:>8} {s['reused']:>6} {fps:>7}  {labels}{errors}")
    return "\n".join(lines)
