"""``python -m batch.score`` on one local Spark session (local[2], 127.0.0.1, no UI) against moto.

One JVM for the whole test run (it costs 10-45 s to start); each scenario has its own
bucket, a real tiny ONNX bundle (tests.fakes) and a few frames, good and bad.
"""

from __future__ import annotations

import io
import itertools
import os
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from batch import table
from batch.cli import config_from_args
from batch.score import main, run
from devstack.samples import jpeg_bytes
from functions import classify
from shared.clock import Clock
from shared.config import DecodeLimits, FunctionSettings, S3Settings
from shared.storage import ObjectStore
from tests.fakes import TickingClock, build_tiny_bundle, publish_bundle, s3_event
from tests.result_schema import assert_valid_result

pytestmark = pytest.mark.batch  # pyspark, pandas, pyarrow: not in the function's runtime

RED, BLUE = (220, 30, 30), (30, 30, 220)
# The function's own limits, from the same environment names the function reads.
ENV_LIMITS = {"MAX_IMAGE_BYTES": "200000", "MAX_IMAGE_PIXELS": "1000000"}
VOLATILE = ("timings_ms", "processed_at", "batch_size")  # how and when, not what
# The driver's environment before any session: building one must leave it as it was.
ENV_BEFORE = {name: os.environ.get(name) for name in ("PYTHONPATH", "PYSPARK_PYTHON", "MALLOC_ARENA_MAX")}
_ids = itertools.count()


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    from batch.session import build_session, check_java
    from shared.errors import JavaNotFoundError

    try:
        check_java(os.environ)
    except JavaNotFoundError as exc:
        pytest.skip(str(exc))
    session = build_session("local[2]", conf={"spark.sql.shuffle.partitions": "2"})
    yield session
    session.stop()


def new_bucket(s3_client: Any, tmp: Path, version: str = "tiny-v1") -> ObjectStore:
    store = ObjectStore(s3_client, f"batch-{os.getpid()}-{next(_ids)}")
    s3_client.create_bucket(Bucket=store.bucket)
    build_tiny_bundle(tmp / version, with_top=True, version=version)
    publish_bundle(store, tmp / version)
    return store


def frame(colour: tuple[int, int, int], seed: int, size: tuple[int, int] = (160, 120)) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour) + rng.integers(-20, 21, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    return jpeg_bytes(Image.fromarray(pixels))


def bad_inputs(good: bytes) -> dict[str, bytes]:
    bomb = io.BytesIO()
    Image.new("L", (2000, 1000)).save(bomb, "PNG")  # 2 MP in 2 kB, over the 1 MP limit
    return {"text.jpg": b"This is a text file, not a frame.\n", "truncated.jpg": good[: len(good) // 2],
            "big.jpg": bytes(np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8)),
            "bomb.png": bomb.getvalue()}


def seed_frames(store: ObjectStore, n: int = 20) -> dict[str, str]:
    """``n`` frames over 3 cameras (red ones are cars, blue ones buses) and 4 bad ones on cam-b; key -> label."""
    labels = {}
    for i in range(n):
        colour, label = (RED, "car") if i % 3 else (BLUE, "bus")
        key = f"incoming/cam-{'abc'[i % 3]}/2026-11-30/{i:04d}.jpg"
        store.put(key, frame(colour, i), content_type="image/jpeg")
        labels[key] = label
    for name, data in bad_inputs(frame(RED, 99)).items():
        store.put(f"incoming/cam-b/bad/{name}", data, content_type="image/jpeg")
        labels[f"incoming/cam-b/bad/{name}"] = "error"
    return labels


def args(store: ObjectStore, endpoint: str, *extra: str) -> list[str]:
    return ["--bucket", store.bucket, "--endpoint-url", endpoint, "--region", "us-east-1", "--no-progress",
            "--cache-dir", str(Path(os.environ.get("TMPDIR", "/tmp")) / f"cctv-batch-test-{os.getpid()}"), *extra]


def score(spark: Any, store: ObjectStore, s3: S3Settings, *extra: str, clock: Clock | None = None) -> dict[str, Any]:
    cfg = config_from_args(args(store, str(s3.endpoint_url), *extra), {**os.environ, **ENV_LIMITS})
    if clock is None:  # the store and the clock the edge would build
        return run(cfg, spark=spark, out=lambda line: None)
    return run(cfg, spark=spark, out=lambda line: None, store=store, clock=clock)


def read_table(store: ObjectStore, s3: S3Settings) -> Any:
    import pyarrow.dataset as ds

    base = f"{store.bucket}/tables/results"
    data = ds.dataset(base, filesystem=table.filesystem(s3), format="parquet", partitioning="hive")
    return data.to_table().to_pandas().sort_values(["key", "scored_at"]).reset_index(drop=True)


def without(doc: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in names}


@pytest.fixture(scope="module")
def scored(spark: Any, s3_client: Any, s3_settings: S3Settings,
           tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One bucket of 24 inputs scored once with 5 frames per task (so workers run several tasks)."""
    store = new_bucket(s3_client, tmp_path_factory.mktemp("bundle"))
    labels = seed_frames(store)
    summary = score(spark, store, s3_settings, "--frames-per-task", "5", clock=TickingClock())
    return {"store": store, "labels": labels, "summary": summary}


def test_local_workers_get_the_repo_and_this_python_while_the_driver_keeps_its_environment(spark: Any) -> None:
    from batch.session import MALLOC_ARENA_MAX, REPO_ROOT

    def probe(_: Any) -> Iterator[tuple[str, str, str | None]]:
        import sys

        yield sys.executable, os.environ.get("PYTHONPATH", ""), os.environ.get("MALLOC_ARENA_MAX")

    [(python, path, arenas)] = spark.sparkContext.parallelize([0], 1).mapPartitions(probe).collect()
    assert str(REPO_ROOT) in path.split(os.pathsep) and arenas == MALLOC_ARENA_MAX
    assert python == (ENV_BEFORE["PYSPARK_PYTHON"] or __import__("sys").executable)
    assert {name: os.environ.get(name) for name in ENV_BEFORE} == ENV_BEFORE


# -- the same results as the function ---------------------------------------------------


def test_result_documents_equal_the_functions(scored: dict[str, Any], s3_client: Any, s3_settings: S3Settings,
                                              tmp_path: Path) -> None:
    store: ObjectStore = scored["store"]
    keys = sorted(scored["labels"])
    settings = FunctionSettings(results_prefix="function-results/", model_cache_dir=str(tmp_path / "cache"),
                                s3=s3_settings, limits=DecodeLimits(200_000, 1_000_000))
    app = classify.App(settings, stores=lambda b: ObjectStore(s3_client, b), clock=TickingClock())
    heads = [store.head(k) for k in keys]
    event = s3_event(store.bucket, keys, etags=[h.etag for h in heads])  # type: ignore[union-attr]
    for record, info in zip(event["Records"], heads, strict=True):
        record["s3"]["object"]["size"] = info.size  # type: ignore[union-attr] # S3 sends the real size
    assert app.handle(event, None)["records"]["failed"] == 0

    for key in keys:
        relative = key.removeprefix("incoming/")
        ours, theirs = store.get_json(f"results/{relative}.json"), store.get_json(f"function-results/{relative}.json")
        assert without(ours, *VOLATILE) == without(theirs, *VOLATILE), key
        assert_valid_result(ours)
        head = s3_client.head_object(Bucket=store.bucket, Key=f"results/{relative}.json")
        assert head["Metadata"] == {"source-etag": ours["source"]["etag"], "model-version": "tiny-v1"}
        assert head["ContentType"] == "application/json"
    good = store.get_json("results/cam-a/2026-11-30/0000.jpg.json")
    assert good["label"] == "bus" and good["imagenet_top"][0]["class"] == "school bus"


def test_bad_inputs_get_error_rows_and_error_results(scored: dict[str, Any], s3_settings: S3Settings) -> None:
    store: ObjectStore = scored["store"]
    rows = read_table(store, s3_settings).set_index("key")
    expected = {"text.jpg": "NotAnImageError", "truncated.jpg": "TruncatedImageError",
                "big.jpg": "ImageTooLargeError", "bomb.png": "DecompressionBombError"}
    for name, kind in expected.items():
        key = f"incoming/cam-b/bad/{name}"
        row = rows.loc[key]
        assert (row["status"], row["error_type"], row["camera"]) == ("error", kind, "cam-b")
        assert row["label"] is None and np.isnan(row["probability"]) and row["error_message"]
        doc = store.get_json(f"results/cam-b/bad/{name}.json")
        assert doc["status"] == "error" and doc["error"]["type"] == kind and doc["probabilities"] is None


# -- the Parquet table --------------------------------------------------------------------


def test_parquet_rows_one_per_input(scored: dict[str, Any], s3_settings: S3Settings, tmp_path: Path) -> None:
    store: ObjectStore = scored["store"]
    rows = read_table(store, s3_settings)
    labels: dict[str, str] = scored["labels"]
    assert sorted(rows["key"]) == sorted(labels) and len(rows) == 24
    assert set(rows["model_version"]) == {"tiny-v1"} and set(rows["run_id"]) == {scored["summary"]["run_id"]}
    assert {"prob_bus", "prob_car", "etag", "size", "attempts", "processed_at", "scored_at"} <= set(rows.columns)
    for row in rows.to_dict("records"):
        assert row["camera"] == row["key"].split("/")[1] and row["attempts"] == 1 and not row["reused"]
        if labels[row["key"]] == "error":
            continue
        doc = store.get_json(row["result_key"])
        assert (row["status"], row["label"]) == ("ok", labels[row["key"]])
        assert row["etag"] == doc["source"]["etag"] == store.head(row["key"]).etag  # type: ignore[union-attr]
        assert row["prob_car"] == doc["probabilities"]["car"] and row["probability"] == doc["probability"]
    names = [info.key for info in store.list("tables/results/model_version=tiny-v1/")]
    run_id = scored["summary"]["run_id"]
    assert names == [f"tables/results/model_version=tiny-v1/part-{run_id}-{i:05d}.parquet" for i in range(5)]

    # A downloaded copy opened in DuckDB shows the same rows as pyarrow reading the bucket.
    import duckdb

    local = tmp_path / "model_version=tiny-v1"
    local.mkdir()
    for name in names:
        (local / name.rsplit("/", 1)[1]).write_bytes(store.get(name).body)
    query = f"SELECT key, status, label, prob_car FROM read_parquet('{local}/*.parquet', hive_partitioning=true) " \
            "ORDER BY key"
    via_duckdb = duckdb.execute(query).fetchall()
    via_arrow = rows.sort_values("key")[["key", "status", "label", "prob_car"]]
    assert [tuple(r[:3]) for r in via_duckdb] == [tuple(r) for r in via_arrow[["key", "status", "label"]].values]
    assert duckdb.execute(f"SELECT DISTINCT model_version FROM read_parquet('{local}/*.parquet', "
                          "hive_partitioning=true)").fetchall() == [("tiny-v1",)]


# -- the summary and the workers ----------------------------------------------------------


def test_the_injected_clock_stamps_the_run_and_its_rows(scored: dict[str, Any], s3_settings: S3Settings) -> None:
    summary = scored["summary"]
    start = TickingClock().now  # the driver's first reading
    assert summary["run_id"].startswith(f"{start:%Y%m%dT%H%M%SZ}-")
    assert summary["started_at"] == start.isoformat(timespec="seconds") < summary["finished_at"]
    stamps = read_table(scored["store"], s3_settings)["scored_at"]
    assert all(start < t.to_pydatetime() < start + timedelta(minutes=1) for t in stamps)  # the tasks' copies



def test_summary_counts_per_camera(scored: dict[str, Any]) -> None:
    summary = scored["summary"]
    store: ObjectStore = scored["store"]
    assert summary["total"] | {"frames_per_s": None} == {
        "frames": 24, "ok": 20, "error": 4, "failed": 0, "skipped": 0, "scored_this_run": 24, "reused": 0,
        "labels": {"bus": 7, "car": 13}, "frames_per_s": None,
        "error_types": {"DecompressionBombError": 1, "ImageTooLargeError": 1, "NotAnImageError": 1,
                        "TruncatedImageError": 1}}
    assert summary["total"]["frames_per_s"] > 0
    assert {c: s["frames"] for c, s in summary["cameras"].items()} == {"cam-a": 7, "cam-b": 11, "cam-c": 6}
    assert summary["cameras"]["cam-a"]["labels"] == {"bus": 7}
    assert summary["already_scored"] == 0 and summary["scored"] == 24 and summary["tasks"] == 5
    stored = store.get_json(f"tables/summaries/model_version=tiny-v1/{summary['run_id']}.json")
    assert stored == summary


def test_one_bundle_load_per_python_worker(scored: dict[str, Any]) -> None:
    workers = scored["summary"]["workers"]
    assert sum(w["tasks"] for w in workers.values()) == 5
    assert 1 <= len(workers) <= 5 and any(w["tasks"] > 1 for w in workers.values())  # reused between tasks
    assert all(w["bundle_loads"] == 1 for w in workers.values()), workers
    assert all(0 < w["peak_rss_mb"] < 400 for w in workers.values())


# -- resume and idempotence ----------------------------------------------------------------


def test_resume_second_run_does_nothing_and_a_changed_etag_is_scored_again(
        spark: Any, s3_client: Any, s3_settings: S3Settings, tmp_path: Path) -> None:
    store = new_bucket(s3_client, tmp_path)
    for i in range(4):
        store.put(f"incoming/cam-{i % 2}/{i}.jpg", frame(RED, i), content_type="image/jpeg")
    first = score(spark, store, s3_settings)
    assert first["scored"] == 4 and first["total"]["ok"] == 4

    second = score(spark, store, s3_settings)
    assert (second["scored"], second["already_scored"], second["tasks"]) == (0, 4, 0)
    assert second["total"]["ok"] == 4 and second["total"]["scored_this_run"] == 0

    before = store.get_json("results/cam-1/1.jpg.json")
    store.put("incoming/cam-1/1.jpg", frame(BLUE, 1), content_type="image/jpeg")  # re-uploaded: a new ETag
    third = score(spark, store, s3_settings)
    assert (third["scored"], third["already_scored"]) == (1, 3)
    after = store.get_json("results/cam-1/1.jpg.json")
    assert (before["label"], after["label"]) == ("car", "bus") and after["source"]["etag"] != before["source"]["etag"]
    # The newest row per key only: 4 frames, not 5, though the table now holds 5 rows.
    assert len(read_table(store, s3_settings)) == 5
    assert third["total"] | {"frames_per_s": None} == {
        "frames": 4, "ok": 4, "error": 0, "failed": 0, "skipped": 0, "scored_this_run": 1, "reused": 0,
        "labels": {"bus": 1, "car": 3}, "error_types": {}, "frames_per_s": None}

    # A new model version scores everything again, into its own partition.
    build_tiny_bundle(tmp_path / "v2", version="tiny-v2")
    publish_bundle(store, tmp_path / "v2")
    fourth = score(spark, store, s3_settings, "--keys", str(_keys_file(tmp_path, store)))
    assert fourth["model"]["version"] == "tiny-v2" and fourth["scored"] == 4
    assert store.get_json("results/cam-0/0.jpg.json")["model"]["version"] == "tiny-v2"


def _keys_file(tmp_path: Path, store: ObjectStore) -> Path:
    path = tmp_path / "keys.txt"
    path.write_text("".join(f"{info.key}\n" for info in store.list("incoming/")))
    return path


def test_a_result_written_before_the_table_is_reused_not_recomputed(
        spark: Any, s3_client: Any, s3_settings: S3Settings, tmp_path: Path) -> None:
    """A task killed after writing results but before its part: the re-run finds the results and keeps them."""
    store = new_bucket(s3_client, tmp_path)
    store.put("incoming/cam/0.jpg", frame(RED, 0), content_type="image/jpeg")
    score(spark, store, s3_settings)
    written = store.get_json("results/cam/0.jpg.json")
    for info in store.list("tables/"):
        s3_client.delete_object(Bucket=store.bucket, Key=info.key)

    again = score(spark, store, s3_settings)

    assert again["scored"] == 1 and again["total"]["reused"] == 1 and again["total"]["ok"] == 1
    assert store.get_json("results/cam/0.jpg.json") == written  # the same document, not rewritten


# -- listing --------------------------------------------------------------------------------


def test_listing_per_camera_prefix_skips_folder_markers_and_takes_the_window(store: ObjectStore) -> None:
    from datetime import datetime, timedelta, timezone

    from batch.plan import list_frames

    keys = ["incoming/top.jpg", "incoming/cam-a/1.jpg", "incoming/cam-a/deep/2.jpg", "incoming/cam-b/3.jpg",
            "incoming/cam-b/", "other/4.jpg"]
    for key in keys:
        store.put(key, b"x")
    for i in range(3):
        store.put(f"incoming/cam-c/{i}.jpg", b"y")
    listed = list_frames(store, "incoming/", threads=4)
    assert [i.key for i in listed] == sorted([k for k in keys if k.startswith("incoming/") and not k.endswith("/")]
                                             + [f"incoming/cam-c/{i}.jpg" for i in range(3)])
    assert all(i.etag and i.size == 1 for i in listed)
    now = datetime.now(timezone.utc)
    assert list_frames(store, "incoming/", since=now + timedelta(hours=1)) == []
    assert len(list_frames(store, "incoming/", since=now - timedelta(hours=1), until=now + timedelta(hours=1))) == 7


# -- stopping early, in one line --------------------------------------------------------------


def test_missing_pieces_stop_in_one_line(s3_client: Any, s3_settings: S3Settings, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint = str(s3_settings.endpoint_url)
    missing = ObjectStore(s3_client, "no-such-bucket-here")
    assert main(args(missing, endpoint, "--master", "local[1]")) == 2
    empty = new_bucket(s3_client, tmp_path)
    assert main(args(empty, endpoint, "--master", "local[1]")) == 2
    no_model = ObjectStore(s3_client, f"batch-nomodel-{os.getpid()}")
    s3_client.create_bucket(Bucket=no_model.bucket)
    assert main(args(no_model, endpoint, "--master", "local[1]")) == 3
    monkeypatch.setenv("PATH", str(tmp_path))  # no java here
    monkeypatch.delenv("JAVA_HOME", raising=False)
    assert main(args(empty, endpoint, "--master", "local[1]")) == 2

    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 4 and all(line.startswith("batch.score: error: ") for line in lines), lines
    assert "no-such-bucket-here" in lines[0] and "No frames found" in lines[1]
    assert "latest.json" in lines[2] and "Java 17" in lines[3]
