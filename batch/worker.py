"""What runs on the executors: ``mapInPandas`` over (key, etag, size, camera) rows.

This module is imported by each Python worker, so its globals live as long as the worker
does (Spark reuses Python workers between tasks).  The classifier and the S3 client are
cached here, once per worker; a cache defined in ``__main__`` would instead be pickled
into every task and never hit.

Each task hands its rows to :class:`functions.service.ClassifyService`, the function's
own core (download, decode, backbone, head, the result document and its conditional
write), retries what failed transiently, writes its Parquet part and yields one line of
statistics for the driver.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from functions.classify import client_store_factory
from functions.events import ObjectRef
from functions.service import ClassifyService, Outcome, Status, StoreFactory
from shared.bundle import load_pinned
from shared.clock import Clock, utc_now
from shared.config import FunctionSettings
from shared.runtime import Classifier

INPUT_SCHEMA = "key string, etag string, size long, camera string"
STATS_SCHEMA = ("partition int, attempt int, frames long, ok long, error long, failed long, reused long, "
                "worker string, bundle_loads long, peak_rss_mb double, seconds double, cpu_seconds double")
# Frames handed to the core per call (its inference batch).  The core would batch up to 32,
# but MobileNetV2's activations for 32 frames hold a Python worker at 480 MB.  Measured in a
# plain process on 960x576 frames: 32 -> 482 MB, 8 -> 231 MB, 4 -> 190 MB at the same CPU per
# frame; 4 also keeps a Spark worker under 400 MB on 5-15 MP photos (up to 433 MB at 8).
CHUNK = 4


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """Everything a task needs, fixed on the driver (so every task uses the same model)."""

    bucket: str
    settings: FunctionSettings
    model_version: str
    manifest_sha256: str
    classes: tuple[str, ...]
    run_id: str
    table: str  # the results table's prefix, e.g. tables/results/
    cache_dir: str
    retries: int = 3
    backoff_s: float = 1.0
    ort_threads: int | None = None  # None: spark.task.cpus of the running task
    chunk: int = CHUNK
    clock: Clock = utc_now  # the rows' scored_at; a module-level function, so it pickles by reference


class WorkerState:
    """One per Python worker process: the S3 client, the classifier and a count of bundle loads."""

    def __init__(self, stores: StoreFactory | None = None) -> None:
        self.bundle_loads = 0
        self._stores = stores  # injected by tests; else one boto3 client for the worker (the function's own)
        self._classifier: Classifier | None = None
        self._key: tuple[str, str, int] | None = None
        self._lock = threading.Lock()

    def stores(self, settings: FunctionSettings) -> StoreFactory:
        if self._stores is None:
            self._stores = client_store_factory(settings)
        return self._stores

    def classifier(self, spec: TaskSpec, threads: int) -> Classifier:
        """The model the driver resolved: fetched once, sha256-checked, written atomically (shared.bundle)."""
        key = (spec.model_version, spec.manifest_sha256, threads)
        with self._lock:
            if self._classifier is None or self._key != key:
                store = self.stores(spec.settings)(spec.settings.model_bucket or spec.bucket)
                self._classifier = load_pinned(store, spec.settings.model_prefix, spec.model_version,
                                               spec.manifest_sha256, Path(spec.cache_dir), threads=threads)
                self._key = key
                self.bundle_loads += 1
            return self._classifier


_STATE: WorkerState | None = None


def state() -> WorkerState:
    global _STATE
    if _STATE is None:
        _STATE = WorkerState()
    return _STATE


def task_cpus() -> int:
    from pyspark import TaskContext

    ctx = TaskContext.get()
    return max(1, int(ctx.cpus())) if ctx is not None else 1


def score_partition(spec: TaskSpec, progress: Any, batches: Iterator[Any]) -> Iterator[Any]:
    """The ``mapInPandas`` function: score one partition, write its part, yield its statistics."""
    import pandas as pd
    from pyspark import TaskContext

    started, cpu_started = time.perf_counter(), time.process_time()
    ctx = TaskContext.get()
    partition, attempt = (ctx.partitionId(), ctx.attemptNumber()) if ctx is not None else (0, 0)
    worker = f"{socket.gethostname()}:{os.getpid()}"
    rows: list[dict[str, Any]] = []
    for frame in batches:
        items = list(zip(frame["key"], frame["etag"], frame["size"], frame["camera"], strict=True))
        for start in range(0, len(items), spec.chunk):
            rows.extend(score_items(spec, items[start:start + spec.chunk], worker))
    if rows:
        from batch import table

        path = table.part_path(spec.bucket, spec.table, spec.model_version, spec.run_id, partition)
        table.write_part(table.filesystem(spec.settings.s3), path, rows, spec.classes)
    if progress is not None:
        progress.add(len(rows))
    counts = {s: sum(1 for r in rows if r["status"] == s) for s in ("ok", "error", "failed")}
    yield pd.DataFrame([{
        "partition": partition, "attempt": attempt, "frames": len(rows), **counts,
        "reused": sum(1 for r in rows if r["reused"]), "worker": worker, "bundle_loads": state().bundle_loads,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu_started,
    }])


def score_items(spec: TaskSpec, items: Sequence[tuple[Any, Any, Any, Any]], worker: str) -> list[dict[str, Any]]:
    """Score (key, etag, size, camera) tuples through the function's core; one table row each."""
    from batch.table import row_for

    refs = [ObjectRef(spec.bucket, str(key), _str(etag), _int(size)) for key, etag, size, _ in items]
    outcomes, attempts = run_with_retries(spec, refs)
    now = spec.clock()
    return [row_for(outcome, str(item[3]), spec.classes, run_id=spec.run_id, scored_at=now, attempts=n, worker=worker)
            for outcome, item, n in zip(outcomes, items, attempts, strict=True)]


def run_with_retries(spec: TaskSpec, refs: Sequence[ObjectRef]) -> tuple[list[Outcome], list[int]]:
    """The core's outcomes; those that failed (transient faults) are run again with backoff, up to ``retries`` times."""
    outcomes = _run(spec, refs)
    attempts = [1] * len(refs)
    for retry in range(spec.retries):
        todo = [i for i, outcome in enumerate(outcomes) if outcome.status is Status.FAILED]
        if not todo:
            break
        time.sleep(spec.backoff_s * 2 ** retry)
        for i, outcome in zip(todo, _run(spec, [refs[i] for i in todo]), strict=True):
            outcomes[i], attempts[i] = outcome, attempts[i] + 1
    return outcomes, attempts


def _run(spec: TaskSpec, refs: Sequence[ObjectRef]) -> list[Outcome]:
    worker = state()
    try:
        classifier = worker.classifier(spec, spec.ort_threads or task_cpus())
    except Exception as exc:  # noqa: BLE001 - the model could not load here: every frame failed, retry later
        return [Outcome(ref, Status.FAILED, error=exc) for ref in refs]
    service = ClassifyService(spec.settings, worker.stores(spec.settings), classifier)
    return service.run(refs)


def _str(value: Any) -> str | None:
    return None if value is None or value != value else str(value)  # NaN != NaN


def _int(value: Any) -> int | None:
    return None if value is None or value != value else int(value)
