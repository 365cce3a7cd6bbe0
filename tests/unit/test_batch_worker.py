"""The executor side without Spark: the function's core on an in-memory store, retries, rows, summary, Java."""

from __future__ import annotations

import os
import stat
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
from PIL import Image

from batch import session, table, worker
from batch.score import progress_line
from batch.session import check_java, first_line
from batch.worker import TaskSpec, WorkerState
from devstack.samples import jpeg_bytes
from functions.events import ObjectRef
from functions.service import Outcome, Status
from shared.config import FunctionSettings
from shared.errors import JavaNotFoundError, TransientStorageError
from shared.storage import ObjectData
from tests.fakes import build_tiny_bundle, publish_bundle
from tests.memory_store import MemoryStore

pytestmark = pytest.mark.batch  # pyspark, pandas, pyarrow: not in the function's runtime

NOW = datetime(2026, 12, 1, 6, 0, tzinfo=timezone.utc)


class FlakyStore(MemoryStore):
    """Fails the first ``failures`` reads of each key as an S3 outage would."""

    def __init__(self, failures: int) -> None:
        super().__init__("bkt")
        self.failures = failures
        self.seen: dict[str, int] = {}

    def get(self, key: str, *, max_bytes: int | None = None) -> ObjectData:
        if key.startswith("incoming/"):
            self.seen[key] = self.seen.get(key, 0) + 1
            if self.seen[key] <= self.failures:
                raise TransientStorageError(f"s3://bkt/{key} failed (503) after retries; retry later.", key=key)
        return super().get(key, max_bytes=max_bytes)


def spec_for(tmp_path: Path, retries: int = 2) -> TaskSpec:
    return TaskSpec(bucket="bkt", settings=FunctionSettings(model_bucket="bkt", max_workers=2), model_version="tiny-v1",
                    manifest_sha256=_sha(tmp_path), classes=("bus", "car"), run_id="run-1", table="tables/results/",
                    cache_dir=str(tmp_path / "cache"), retries=retries, backoff_s=0.0, ort_threads=1)


def _sha(tmp_path: Path) -> str:
    from shared.bundle import sha256_file

    return sha256_file(tmp_path / "bundle" / "manifest.json")


@pytest.fixture()
def flaky(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FlakyStore:
    store = FlakyStore(failures=1)
    build_tiny_bundle(tmp_path / "bundle")
    publish_bundle(store, tmp_path / "bundle")
    for i, colour in enumerate([(220, 30, 30), (30, 30, 220)]):
        store.put(f"incoming/cam/{i}.jpg", jpeg_bytes(Image.new("RGB", (64, 48), colour)))
    store.put("incoming/cam/bad.jpg", b"not an image")
    monkeypatch.setattr(worker, "_STATE", WorkerState(stores=lambda bucket: store))
    return store


def items(store: MemoryStore) -> list[tuple[str, str, int, str]]:
    return [(i.key, i.etag, i.size, "cam") for i in store.list("incoming/")]


def test_transient_faults_are_retried_in_the_task(flaky: FlakyStore, tmp_path: Path) -> None:
    rows = worker.score_items(spec_for(tmp_path), items(flaky), "host:1")
    by_key = {r["key"]: r for r in rows}
    assert [by_key[f"incoming/cam/{i}.jpg"]["label"] for i in (0, 1)] == ["car", "bus"]
    assert all(r["attempts"] == 2 for r in rows)  # one transient fault each, then through
    assert by_key["incoming/cam/bad.jpg"]["status"] == "error"
    assert flaky.get_json("results/cam/0.jpg.json")["status"] == "ok"
    assert worker.state().bundle_loads == 1
    worker.score_items(spec_for(tmp_path), items(flaky), "host:1")
    assert worker.state().bundle_loads == 1  # the worker's classifier is reused


def test_what_still_fails_after_the_retries_is_a_failed_row(flaky: FlakyStore, tmp_path: Path) -> None:
    flaky.failures = 10
    rows = worker.score_items(spec_for(tmp_path, retries=1), items(flaky), "host:1")
    assert {r["status"] for r in rows} == {"failed"}
    assert {r["error_type"] for r in rows} == {"TransientStorageError"} and {r["attempts"] for r in rows} == {2}
    assert not any(k.startswith("results/") for k in flaky.objects)  # nothing written for a failure


def test_a_model_that_cannot_load_fails_the_frames_not_the_task(flaky: FlakyStore, tmp_path: Path) -> None:
    spec = spec_for(tmp_path, retries=0)
    broken = TaskSpec(**{**spec.__dict__, "manifest_sha256": "0" * 64})
    rows = worker.score_items(broken, items(flaky), "host:1")
    assert {(r["status"], r["error_type"]) for r in rows} == {("failed", "BundleIntegrityError")}
    assert worker.state().bundle_loads == 0


def test_row_of_a_reused_result_takes_its_status_and_values() -> None:
    ref = ObjectRef("bkt", "incoming/c/1.jpg", "etag-listed", 10)
    result = {"status": "ok", "label": "car", "probability": 0.9, "probabilities": {"bus": 0.1, "car": 0.9},
              "source": {"etag": "etag-read", "size": 11}, "processed_at": "2026-11-30T10:00:00.000Z", "error": None}
    row = table.row_for(Outcome(ref, Status.SKIPPED, "results/c/1.jpg.json", result), "c", ["bus", "car"],
                        run_id="r", scored_at=NOW, attempts=1, worker="w")
    assert (row["status"], row["reused"], row["etag"], row["size"]) == ("ok", True, "etag-read", 11)
    assert (row["prob_bus"], row["prob_car"]) == (0.1, 0.9)
    assert row["processed_at"] == datetime(2026, 11, 30, 10, tzinfo=timezone.utc)
    failed = table.row_for(Outcome(ref, Status.FAILED, error=RuntimeError("boom")), "c", ["bus", "car"],
                           run_id="r", scored_at=NOW, attempts=3, worker="w")
    assert (failed["status"], failed["error_type"], failed["etag"], failed["label"]) == \
        ("failed", "RuntimeError", "etag-listed", None)


def test_row_of_a_clip_takes_its_dominant_label() -> None:
    ref = ObjectRef("bkt", "incoming/c/clip.mp4", "e", 10)
    result = {"status": "ok", "kind": "video", "label": None, "probabilities": None, "source": {"etag": "e"},
              "summary": {"dominant_label": "bus", "label_share": {"bus": 0.67, "car": 0.33}}, "error": None}
    row = table.row_for(Outcome(ref, Status.OK, "results/c/clip.mp4.json", result), "c", ["bus", "car"],
                        run_id="r", scored_at=NOW, attempts=1, worker="w")
    assert (row["label"], row["probability"], row["prob_bus"]) == ("bus", 0.67, None)


def test_class_columns_are_safe_and_unique() -> None:
    assert table.class_columns(["Bus", "car/van", "car van", "äöü"]) == {
        "Bus": "prob_bus", "car/van": "prob_car_van", "car van": "prob_car_van_2", "äöü": "prob_class"}


def test_summary_counts_the_newest_row_per_key_and_never_drops_a_listed_key() -> None:
    listed = {"k1": "a", "k2": "a", "k3": "b", "k4": "b"}
    newest = {"k1": {"status": "ok", "label": "car", "run_id": "r2", "reused": False},
              "k2": {"status": "error", "error_type": "NotAnImageError", "run_id": "r1", "reused": False},
              "k3": {"status": "failed", "error_type": "TransientStorageError", "run_id": "r2", "reused": False}}
    summary = table.summarise(listed, newest, "r2", elapsed_s=2.0)
    assert summary["cameras"]["a"] | {"labels": None, "error_types": None} == {
        "frames": 2, "ok": 1, "error": 1, "failed": 0, "skipped": 0, "scored_this_run": 1, "reused": 0,
        "frames_per_s": 0.5, "labels": None, "error_types": None}
    assert summary["cameras"]["b"]["failed"] == 2
    assert summary["cameras"]["b"]["error_types"] == {"NotScored": 1, "TransientStorageError": 1}
    assert summary["total"]["frames"] == 4 and summary["total"]["labels"] == {"car": 1}
    assert "TOTAL" in table.format_summary(summary)


def _java(tmp_path: Path, version: str) -> dict[str, str]:
    java = tmp_path / "bin" / "java"
    java.parent.mkdir(exist_ok=True)
    java.write_text(f"#!/bin/sh\necho 'openjdk version \"{version}\" 2025-04-15' >&2\n")
    java.chmod(java.stat().st_mode | stat.S_IEXEC)
    return {"JAVA_HOME": str(tmp_path), "PATH": ""}


def test_java_17_or_newer_is_required(tmp_path: Path) -> None:
    assert check_java(_java(tmp_path, "17.0.15")) == 17
    assert check_java(_java(tmp_path, "21")) == 21
    with pytest.raises(JavaNotFoundError, match="is Java 8"):
        check_java(_java(tmp_path, "1.8.0_402"))
    with pytest.raises(JavaNotFoundError, match="none was found"):
        check_java({"PATH": str(tmp_path / "empty")})


def test_first_line_of_a_task_error_and_the_progress_line() -> None:
    text = ("An error occurred while calling o1.collectToPython.\n  File \"x.py\", line 1\n"
            "pyspark.errors.exceptions.captured.PythonException: ValueError: bad thing\n  at org.apache...")
    assert first_line(Exception(text)).endswith("ValueError: bad thing")
    assert progress_line(50, 200, 10.0) == "batch: 50/200 frames scored, 5.0 frames/s, ETA 30 s"
    assert progress_line(0, 200, 12.0) == "batch: 0/200 frames scored, 12 s in (tasks report as they finish)"


def test_rows_are_stamped_by_the_injected_clock(flaky: FlakyStore, tmp_path: Path) -> None:
    spec = TaskSpec(**{**spec_for(tmp_path).__dict__, "clock": lambda: NOW})
    rows = worker.score_items(spec, items(flaky), "host:1")
    assert rows and {r["scored_at"] for r in rows} == {NOW}


def test_the_workers_python_is_set_only_while_a_local_context_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYSPARK_PYTHON", raising=False)
    with session._worker_python(True):
        assert os.environ["PYSPARK_PYTHON"] == sys.executable
    assert "PYSPARK_PYTHON" not in os.environ
    with session._worker_python(False):
        assert "PYSPARK_PYTHON" not in os.environ  # spark-submit or a cluster: theirs to set
    monkeypatch.setenv("PYSPARK_PYTHON", "/opt/python")
    with session._worker_python(True):
        assert os.environ["PYSPARK_PYTHON"] == "/opt/python"  # the caller's choice wins
    assert session.local_python_conf() == {"spark.executorEnv.PYTHONPATH": str(session.REPO_ROOT)}
