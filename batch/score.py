"""``python -m batch.score``: score a bucket's frames on Spark with the function's classification core.

On the driver: check the bucket, resolve the model once (version and manifest sha256),
list the frames (or read ``--keys``), drop those the results table already settles for
this model and ETag, and cut the rest into contiguous slices, one per task.  On the
executors: :func:`batch.worker.score_partition`.  At the end: the per-camera summary,
printed and written as JSON next to the table.  Misuse and missing pieces stop with one
line and a non-zero exit; ``--verbose`` shows Spark's own logs.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import secrets
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from batch import plan, table
from batch.cli import BatchConfig, config_from_args
from batch.plan import Item
from batch.session import build_session, check_java, first_line, is_local
from batch.worker import INPUT_SCHEMA, STATS_SCHEMA, TaskSpec, score_partition
from shared.bundle import Manifest, fetch_manifest, resolve_version, sha256_bytes
from shared.clock import Clock, utc_now
from shared.errors import CCTVError, ConfigError, NoInputError, SparkJobError
from shared.listing import Listed
from shared.storage import ObjectStore, make_client

Printer = Callable[[str], None]
PROGRESS_EVERY_S = 5.0


@dataclasses.dataclass(frozen=True)
class Model:
    version: str
    manifest_sha256: str
    manifest: Manifest


def new_run_id(now: datetime) -> str:
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def resolve_model(store: ObjectStore, cfg: BatchConfig) -> Model:
    """The model every task will use, fixed now: a promotion during the run changes nothing."""
    pinned = None if cfg.model == "latest" else cfg.model
    version, checked = resolve_version(store, cfg.settings.model_prefix, pinned)
    manifest, raw = fetch_manifest(store, cfg.settings.model_prefix, version, checked)
    return Model(version, sha256_bytes(raw), manifest)


def plan_items(store: ObjectStore, cfg: BatchConfig, out: Printer) -> list[Item]:
    """What this run covers: listed (parallel per camera prefix) or read from ``--keys``."""
    prefix = cfg.settings.input_prefix
    listed: Sequence[plan.KeyEntry | Listed]
    if cfg.keys_file is not None:
        listed, gone = plan.fill_etags(store, plan.read_keys_file(cfg.keys_file, cfg.bucket))
        if gone:
            out(f"batch: {len(gone)} key(s) from {cfg.keys_file} no longer exist, e.g. {gone[0]}; left out")
        source = str(cfg.keys_file)
    else:
        listed = plan.list_frames(store, prefix, since=cfg.since, until=cfg.until, threads=cfg.list_threads)
        source = f"s3://{cfg.bucket}/{prefix}"
    items, outside = plan.to_items(listed, cfg.cameras, cfg.settings)
    if outside:
        out(f"batch: {outside} key(s) are not under {prefix!r}; left out")
    if not items:
        window = "" if not (cfg.since or cfg.until) else " in the --since/--until window"
        raise NoInputError(f"No frames found in {source}{window}; check --bucket, --input-prefix and the dates.",
                           bucket=cfg.bucket)
    return items


def run(cfg: BatchConfig, *, spark: Any = None, out: Printer = print, submitted: bool = False,
        store: ObjectStore | None = None, clock: Clock = utc_now) -> dict[str, Any]:
    """One batch run; returns the summary document (also written to S3 and printed).

    ``store`` is the bucket's (:func:`main` builds it with :func:`default_store`, as does a caller that
    passes none); ``clock`` stamps the run id, the summary's times and each row's ``scored_at``.
    """
    started_at = clock()
    if spark is None and not submitted:
        check_java(os.environ)  # before any work, so a machine without Java fails in one line
    store = default_store(cfg) if store is None else store
    store.check_bucket()
    cfg = with_region(cfg)
    model = resolve_model(store, cfg)
    items = plan_items(store, cfg, out)
    fs = table.filesystem(cfg.s3)
    todo, done = plan.drop_done(items, table.newest_by_key(
        table.read_newest(fs, cfg.bucket, cfg.results_table, model.version)))
    run_id = new_run_id(started_at)
    out(f"batch: run {run_id}, model {model.version}: {len(items)} frames in {len({i.camera for i in items})} "
        f"camera(s), {done} already scored, {len(todo)} to score")
    stats: list[dict[str, Any]] = []
    scoring_s = 0.0
    if todo:
        owned = spark is None
        spark = spark or build_session(None if submitted else cfg.master, verbose=cfg.verbose)
        if owned and not submitted and not is_local(cfg.master):
            ship_code(spark)
        try:
            t0 = time.perf_counter()
            stats = execute(spark, cfg, _spec(cfg, model, run_id, clock), todo, out)
            scoring_s = time.perf_counter() - t0
        finally:
            if owned and not submitted:
                spark.stop()
    newest = table.newest_by_key(table.read_newest(fs, cfg.bucket, cfg.results_table, model.version))
    doc = _document(cfg, model, run_id, (started_at, clock()), items, done, todo, stats, scoring_s, newest)
    _publish(store, cfg, model, run_id, doc, out)
    return doc


def with_region(cfg: BatchConfig) -> BatchConfig:
    """On AWS without ``--region``: the bucket's own region, which pyarrow's S3 filesystem needs (boto3 follows
    redirects, pyarrow does not).  Asked once here, so no task has to."""
    if cfg.s3.region or cfg.s3.endpoint_url:
        return cfg
    from pyarrow import fs

    try:
        region = fs.resolve_s3_region(cfg.bucket)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"Could not find the region of bucket {cfg.bucket!r} ({exc}); pass --region or set "
                          "AWS_REGION.", bucket=cfg.bucket) from None
    s3 = dataclasses.replace(cfg.s3, region=region)
    return dataclasses.replace(cfg, settings=dataclasses.replace(cfg.settings, s3=s3))


def ship_code(spark: Any) -> None:
    """Started with ``--master`` for a cluster rather than through spark-submit: send the executors this code
    (the zip ``make batch-dist`` builds for ``--py-files``); their Python must already have the dependencies."""
    import tempfile

    from batch.dist import build_zip

    code = build_zip(Path(tempfile.mkdtemp(prefix="cctv-batch-code-")) / "cctv_batch.zip")
    spark.sparkContext.addPyFile(str(code))


def default_store(cfg: BatchConfig) -> ObjectStore:
    """The driver's store for the bucket: its own boto3 client, with room for the parallel listing."""
    return ObjectStore(make_client(cfg.s3, max_pool_connections=64), cfg.bucket)


def _spec(cfg: BatchConfig, model: Model, run_id: str, clock: Clock) -> TaskSpec:
    return TaskSpec(bucket=cfg.bucket, settings=cfg.settings, model_version=model.version,
                    manifest_sha256=model.manifest_sha256, classes=tuple(model.manifest.classes), run_id=run_id,
                    table=cfg.results_table, cache_dir=cfg.cache_dir, retries=cfg.retries, clock=clock)


def execute(spark: Any, cfg: BatchConfig, spec: TaskSpec, todo: Sequence[Item], out: Printer) -> list[dict[str, Any]]:
    """Run the scoring job: one task per contiguous slice; a progress line while it runs."""
    sc = spark.sparkContext
    n_tasks = plan.slices(len(todo), cfg.frames_per_task, sc.defaultParallelism)
    slices = [[(i.key, i.etag, i.size, i.camera) for i in s] for s in plan.contiguous(todo, n_tasks)]
    # One slice per partition, so the partition number names the same keys if a task is retried.
    rows = sc.parallelize(slices, n_tasks).flatMap(lambda s: s)
    frame = spark.createDataFrame(rows, INPUT_SCHEMA)
    done = sc.accumulator(0)
    job = frame.mapInPandas(functools.partial(score_partition, spec, done), STATS_SCHEMA)
    result: dict[str, Any] = {}

    def collect() -> None:
        try:
            result["rows"] = [r.asDict() for r in job.collect()]
        except BaseException as exc:  # noqa: BLE001 - re-raised on the driver's thread below
            result["error"] = exc

    thread = threading.Thread(target=collect, name="batch-job", daemon=True)
    started = time.perf_counter()
    thread.start()
    while thread.is_alive():
        thread.join(PROGRESS_EVERY_S)
        if cfg.progress and thread.is_alive():
            out(progress_line(done.value, len(todo), time.perf_counter() - started))
    if "error" in result:
        raise SparkJobError(f"The Spark job failed ({first_line(result['error'])}); the parts that finished "
                            "are kept, so running the same command again resumes.") from None
    if cfg.progress:
        out(progress_line(len(todo), len(todo), time.perf_counter() - started))
    return list(result["rows"])


def progress_line(done: int, total: int, elapsed: float) -> str:
    if done == 0:  # tasks report when they finish; the first ones are still running
        return f"batch: 0/{total} frames scored, {elapsed:.0f} s in (tasks report as they finish)"
    rate = done / elapsed if elapsed > 0 else 0.0
    eta = f"{(total - done) / rate:.0f} s" if rate > 0 else "-"
    return f"batch: {done}/{total} frames scored, {rate:.1f} frames/s, ETA {eta}"


def _document(cfg: BatchConfig, model: Model, run_id: str, times: tuple[datetime, datetime], items: Sequence[Item],
              done: int, todo: Sequence[Item], stats: Sequence[Mapping[str, Any]], scoring_s: float,
              newest: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    summary = table.summarise({i.key: i.camera for i in items}, newest, run_id, scoring_s)
    workers: dict[str, dict[str, Any]] = {}
    for s in stats:  # a worker's latest task has its highest load count and peak
        w = workers.setdefault(s["worker"], {"tasks": 0, "bundle_loads": 0, "peak_rss_mb": 0.0})
        w["tasks"] += 1
        w["bundle_loads"] = max(w["bundle_loads"], int(s["bundle_loads"]))
        w["peak_rss_mb"] = round(max(w["peak_rss_mb"], float(s["peak_rss_mb"])), 1)
    return {
        "run_id": run_id, "bucket": cfg.bucket, "input_prefix": cfg.settings.input_prefix,
        "model": {"version": model.version, "manifest_sha256": model.manifest_sha256},
        "table": f"s3://{table.version_path(cfg.bucket, cfg.results_table, model.version)}/",
        "started_at": times[0].isoformat(timespec="seconds"),
        "finished_at": times[1].isoformat(timespec="seconds"),
        "frames": len(items), "already_scored": done, "scored": len(todo), "tasks": len(stats),
        "scoring_s": round(scoring_s, 2),
        "frames_per_s": round(len(todo) / scoring_s, 2) if scoring_s > 0 else None,
        "cpu_s_per_frame": round(sum(s["cpu_seconds"] for s in stats) / len(todo), 4) if todo and stats else None,
        "workers": workers, **summary,
    }


def _publish(store: ObjectStore, cfg: BatchConfig, model: Model, run_id: str, doc: Mapping[str, Any],
             out: Printer) -> None:
    key = f"{cfg.summaries_prefix}{table.PARTITION}={model.version}/{run_id}.json"
    store.put_json(key, doc)
    if cfg.summary_out is not None:
        cfg.summary_out.parent.mkdir(parents=True, exist_ok=True)
        cfg.summary_out.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    out(table.format_summary(doc))
    rate = f", {doc['frames_per_s']} frames/s" if doc["frames_per_s"] else ""
    reused = doc["total"]["reused"]
    kept = f" ({reused} kept: an equal result was already there)" if reused else ""
    out(f"batch: {doc['scored']} scored{kept} in {doc['scoring_s']} s{rate}; summary at s3://{cfg.bucket}/{key}")


def main(argv: Sequence[str] | None = None, *, submitted: bool = False) -> int:
    env = os.environ
    try:
        cfg = config_from_args(argv, env)
        doc = run(cfg, out=lambda line: print(line, flush=True), submitted=submitted, store=default_store(cfg))
    except CCTVError as exc:
        print(f"batch.score: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("batch.score: interrupted; the parts that finished are kept, run the same command to resume.",
              file=sys.stderr)
        return 130
    failed = doc["total"]["failed"]
    if failed:
        print(f"batch.score: {failed} frame(s) failed (transient faults that outlived the retries); run the same "
              "command again to retry them.", file=sys.stderr)
        return 4
    return 0


if __name__ == "__main__":
    sys.exit(main())
