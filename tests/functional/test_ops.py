"""``python -m ops`` against the moto server, over results the real handler wrote (tests/ops_world.py)."""

from __future__ import annotations

import io
import json
import os
import urllib.request
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from ops.cli import main
from tests.ops_world import BAD, CLIP, LOST, OK_FRAMES, REUPLOADED, World, build_world, jpeg

XSS_KEY = next(k for k in OK_FRAMES if "<script>" in k)
pytestmark = pytest.mark.ops


@pytest.fixture(scope="module")
def world(s3_client: Any, s3_settings: Any, tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(s3_client, f"ops-func-{os.getpid()}", s3_settings, tmp_path_factory.mktemp("ops-world"))


def run(world: World, *args: str, cache: Path | None = None) -> tuple[int, str]:
    out = io.StringIO()
    code = main(world.argv(*args, cache=cache), out=out)
    return code, out.getvalue()


def run_json(world: World, *args: str, cache: Path | None = None) -> Any:
    code, text = run(world, *args, "--json", cache=cache)
    return code, json.loads(text)


# -- summary ---------------------------------------------------------------------------------


def test_summary_counts_labels_errors_latency_models_and_low_confidence(world: World) -> None:
    code, s = run_json(world, "summary")
    assert code == 0
    assert s["results"] == 8 and s["kinds"] == {"frame": 7, "video": 1}
    assert s["status"] == {"ok": 7, "error": 1, "skipped": 0, "failed": 0}
    assert s["labels"] == {"bus": {"count": 4, "share": round(4 / 7, 4)}, "car": {"count": 3, "share": round(3 / 7, 4)}}
    assert s["errors"] == [{"type": "NotAnImageError", "count": 1, "example_key": BAD,
                            "example_message": s["errors"][0]["example_message"]}]
    assert "not an image" in s["errors"][0]["example_message"]
    assert s["latency"]["frame"]["n"] == 6 and s["latency"]["video"]["n"] == 1
    assert 0 < s["latency"]["frame"]["p50_ms"] <= s["latency"]["frame"]["p99_ms"]
    assert s["models"] == {world.version: 8}
    assert s["low_confidence"]["count"] == 1 and s["low_confidence"]["frames"][0]["key"] == "incoming/cam2/0002.jpg"


def test_summary_table_and_grouping(world: World) -> None:
    code, text = run(world, "summary", "--by", "camera")
    assert code == 0
    assert "status: ok 7, error 1, skipped 0, failed 0" in text
    assert "NotAnImageError  1" in text and BAD in text
    rows = {line.split()[0]: line.split() for line in text.splitlines() if line.startswith("cam")}
    assert rows["cam1"][:4] == ["cam1", "3", "3", "0"] and rows["cam2"][:4] == ["cam2", "4", "3", "1"]
    assert rows["cam3"][:2] == ["cam3", "1"]
    _, s = run_json(world, "summary", "--by", "label")
    assert {g["group"]: g["results"] for g in s["groups"]} == {"bus": 4, "car": 3, "(error)": 1}
    _, s = run_json(world, "summary", "--by", "status")
    assert {g["group"]: g["results"] for g in s["groups"]} == {"ok": 7, "error": 1}
    _, s = run_json(world, "summary", "--by", "hour")
    assert sum(g["results"] for g in s["groups"]) == 8 and all(g["group"].endswith(":00Z") for g in s["groups"])


def test_summary_window_excludes_older_results(world: World) -> None:
    _, s = run_json(world, "summary", "--since", "2999-01-01T00:00:00Z")
    assert s["results"] == 0 and s["status"]["ok"] == 0


def test_second_run_reads_the_cache(world: World, tmp_path: Path) -> None:
    _, first = run_json(world, "summary", cache=tmp_path)
    _, second = run_json(world, "summary", cache=tmp_path)
    assert first["source"]["fetched"] == 8 and first["source"]["from_cache"] == 0
    assert second["source"]["fetched"] == 0 and second["source"]["from_cache"] == 8
    assert {k: v for k, v in first.items() if k != "source"} == {k: v for k, v in second.items() if k != "source"}


def test_a_cached_run_sees_changed_new_and_deleted_results(s3_client: Any, bucket: str, tmp_path: Path) -> None:
    from bench.ops_summary import _doc
    from functions.results import encode_result

    now = datetime.now(timezone.utc)

    def put(i: int, **change: Any) -> None:
        doc = {**_doc(i, now, 10), **change}
        key = "results/" + doc["source"]["key"].removeprefix("incoming/") + ".json"
        s3_client.put_object(Bucket=bucket, Key=key, Body=encode_result(doc))

    for i in (1, 2, 3, 4, 5):  # cameras cam01..cam05: one folder each, listed concurrently
        put(i)
    world = World(bucket, s3_client.meta.endpoint_url, None, "")  # type: ignore[arg-type]  # argv only
    _, first = run_json(world, "summary", cache=tmp_path)
    put(2, label="truck")  # changed
    put(6)  # new
    s3_client.delete_object(Bucket=bucket, Key=f"results/cam03/{now:%Y/%m/%d}/frame_000003.jpg.json")  # deleted
    _, second = run_json(world, "summary", cache=tmp_path)
    assert first["results"] == 5 and first["source"]["fetched"] == 5
    assert second["results"] == 5 and second["source"] == {"results_listed": 5, "fetched": 2, "from_cache": 3,
                                                           "from_table": 0}
    assert second["labels"]["truck"]["count"] == 1


def test_camera_regex(world: World) -> None:
    _, s = run_json(world, "summary", "--by", "camera", "--camera-regex", r"cam(\d)/")
    assert [g["group"] for g in s["groups"]] == ["1", "2", "3"]


# -- missing ---------------------------------------------------------------------------------


def test_missing_finds_the_lost_frame_and_the_reupload(world: World) -> None:
    code, found = run_json(world, "missing", "--older-than", "0s")
    assert code == 1
    by_key = {m["key"]: m for m in found["missing"]}
    assert set(by_key) == {LOST, REUPLOADED}
    assert by_key[LOST]["reason"] == "no result" and by_key[LOST]["result_at"] is None
    assert by_key[REUPLOADED]["reason"] in ("result older than the input", "result is for other bytes")
    assert by_key[REUPLOADED]["camera"] == "cam2"
    assert found["inputs"] == 9 and found["pending"] == 0


def test_missing_grace_counts_fresh_inputs_as_pending(world: World) -> None:
    code, text = run(world, "missing", "--older-than", "1h")
    assert code == 0
    assert "0 of 9 inputs have no current result (2 more are younger than 1h" in text


def test_missing_table(world: World) -> None:
    _, text = run(world, "missing", "--older-than", "0s")
    lines = text.splitlines()
    assert lines[0].split() == ["uploaded_at", "camera", "reason", "key"]
    assert any(LOST in line and "no result" in line for line in lines)
    assert "2 of 9 inputs have no current result" in text


def test_missing_sees_a_reupload_within_the_same_second_by_etag(world: World) -> None:
    """The result's LastModified can tie with the input's; the document's source ETag still tells."""
    key = "incoming/cam4/fast.jpg"
    world.store.put(key, jpeg((200, 40, 40)))
    first_etag = world.store.head(key).etag  # type: ignore[union-attr]
    doc = {"status": "ok", "kind": "frame", "source": {"key": key, "etag": first_etag}, "label": "car",
           "probability": 0.9, "processed_at": datetime.now(timezone.utc).isoformat()}
    world.store.put(key, jpeg((40, 40, 200)))  # new bytes...
    world.store.put_json("results/cam4/fast.jpg.json", doc)  # ...and a result for the old ones, written after
    try:
        _, found = run_json(world, "missing", "--older-than", "0s")
        assert {m["key"]: m["reason"] for m in found["missing"]}[key] == "result is for other bytes"
    finally:
        world.store.client.delete_objects(Bucket=world.bucket, Delete={"Objects": [
            {"Key": key}, {"Key": "results/cam4/fast.jpg.json"}]})


# -- list and show ---------------------------------------------------------------------------


def test_list_filters(world: World) -> None:
    _, everything = run_json(world, "list")
    assert everything["total"] == 8
    _, cam1 = run_json(world, "list", "--camera", "cam1")
    assert {r["key"] for r in cam1["results"]} == {k for k in OK_FRAMES if "/cam1/" in k}
    _, errors = run_json(world, "list", "--status", "error")
    assert [(r["key"], r["error_type"]) for r in errors["results"]] == [(BAD, "NotAnImageError")]
    _, sure = run_json(world, "list", "--min-prob", "0.9", "--kind", "frame")
    assert "incoming/cam2/0002.jpg" not in {r["key"] for r in sure["results"]} and sure["total"] == 5
    _, cars = run_json(world, "list", "--label", "car", "--limit", "1")
    assert cars["total"] == 3 and len(cars["results"]) == 1


def test_list_table_escapes_control_characters(world: World) -> None:
    key = "incoming/cam5/evil\x1b[31m\n.jpg"
    world.store.put_json("results/cam5/evil.jpg.json", {"status": "ok", "kind": "frame", "label": "bus",
                                                        "probability": 0.8, "source": {"key": key}})
    try:
        _, text = run(world, "list", "--camera", "cam5")
        assert "\x1b" not in text and "evil\\x1b[31m\\n.jpg" in text
    finally:
        world.store.client.delete_object(Bucket=world.bucket, Key="results/cam5/evil.jpg.json")


def test_show_a_frame_with_a_working_presigned_link(world: World) -> None:
    code, text = run(world, "show", "incoming/cam1/0001.jpg")
    assert code == 0
    fields = dict(line.split(None, 1) for line in text.splitlines() if line and not line.startswith(" "))
    assert fields["label"] == "car" and fields["status"] == "ok" and fields["camera"] == "cam1"
    assert "p(car)" in text and "threshold" in text
    with urllib.request.urlopen(fields["input"], timeout=10) as resp:  # no credentials needed
        assert resp.read() == world.store.get("incoming/cam1/0001.jpg").body


def test_show_a_clip_by_result_key_json(world: World) -> None:
    code, shown = run_json(world, "show", "results/cam3/clip.mp4.json")
    assert code == 0 and shown["result"]["kind"] == "video" and shown["result"]["source"]["key"] == CLIP
    with urllib.request.urlopen(shown["links"]["annotated_clip"], timeout=10) as resp:
        assert resp.read(12)[4:8] == b"ftyp"  # an mp4


def test_show_unknown_key_is_one_line(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = run(world, "show", "incoming/nope.jpg")
    assert code == 2 and "does not exist" in capsys.readouterr().err


# -- report ----------------------------------------------------------------------------------


def test_report_to_a_folder(world: World, tmp_path: Path) -> None:
    code, where = run_json(world, "report", "--out", str(tmp_path), "--older-than", "0s", cache=tmp_path / "c")
    assert code == 0
    assert where["cards"] == 7 and where["clips"] == 1 and where["errors"] == 1 and where["missing"] == 2
    html = (tmp_path / "index.html").read_text()
    assert "&lt;script&gt;window.__xss=1&lt;/script&gt;" in html and "<script>window.__xss" not in html
    assert html.count("data:image/jpeg;base64,") == 5  # ok frames whose bytes are those classified
    assert "http://" not in html.replace(world.endpoint, "")  # nothing loaded from elsewhere
    assert "<script src" not in html and "<link" not in html


def test_report_to_the_bucket(world: World) -> None:
    code, text = run(world, "report", "--to", f"s3://{world.bucket}/reports/")
    assert code == 0
    link = text.split("open: ", 1)[1].strip()
    with urllib.request.urlopen(link, timeout=10) as resp:
        assert resp.headers["Content-Type"].startswith("text/html")
        assert b"What the cameras saw" in resp.read()


# -- the Parquet table ----------------------------------------------------------------------


def _write_table(world: World, rows: list[dict[str, Any]]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ops.table import filesystem
    from shared.config import S3Settings

    fs = filesystem(S3Settings(world.endpoint, "us-east-1"))
    path = f"{world.bucket}/tables/results/model_version={world.version}/part-00000.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, filesystem=fs)


@pytest.mark.batch  # the table is the batch job's, written and read with pyarrow
def test_table_is_read_instead_when_asked_and_fresh(world: World) -> None:
    _, listed = run_json(world, "list", "--limit", "0")
    now = datetime.now(timezone.utc)
    rows = [{"key": r["key"], "etag": r["source_etag"], "status": r["status"], "label": r["label"],
             "probability": r["probability"], "error_type": r["error_type"], "processed_at": now,
             "run_id": "run-1"} for r in listed["results"]]
    _write_table(world, rows)
    try:
        _, s = run_json(world, "summary", "--source", "table")
        assert s["source"]["from_table"] == 8 and s["source"]["fetched"] == 0
        assert s["status"]["ok"] == 7 and s["status"]["error"] == 1 and s["kinds"] == {"frame": 7, "video": 1}
        assert s["labels"]["bus"]["count"] == 4
        _, auto = run_json(world, "summary")  # few results to fetch: auto reads the objects
        assert auto["source"]["from_table"] == 0
    finally:
        world.store.client.delete_object(Bucket=world.bucket,
                                         Key=f"tables/results/model_version={world.version}/part-00000.parquet")


@pytest.mark.batch
def test_the_batch_jobs_own_table_rows_are_read(world: World) -> None:
    """Rows made by batch.table from the same result documents, written as the batch job writes them."""
    from batch.table import part_path, row_for, write_part
    from functions.events import ObjectRef
    from functions.results import Outcome, Status
    from ops.table import filesystem
    from shared.config import S3Settings

    _, objects = run_json(world, "summary", "--source", "objects", "--by", "camera")
    rows = []
    for result_key in (o.key for o in world.store.list("results/") if o.key.endswith(".json")):
        doc = world.store.get_json(result_key)
        outcome = Outcome(ObjectRef(world.bucket, doc["source"]["key"]), Status(doc["status"]), result_key, doc)
        rows.append(row_for(outcome, "ignored", ["bus", "car"], run_id="run-1",
                            scored_at=datetime.now(timezone.utc), attempts=1, worker="w"))
    fs = filesystem(S3Settings(world.endpoint, "us-east-1"))
    path = part_path(world.bucket, "tables/results/", world.version, "run-1", 0)
    write_part(fs, path, rows, ["bus", "car"])
    try:
        _, table = run_json(world, "summary", "--source", "table", "--by", "camera")
        assert table["source"]["from_table"] == 8 and table["source"]["fetched"] == 0
        for field in ("results", "status", "labels", "errors", "kinds", "models", "groups"):
            assert table[field] == objects[field], field
    finally:
        world.store.client.delete_object(Bucket=world.bucket, Key=path.split("/", 1)[1])


def test_without_a_table_the_objects_are_read(world: World) -> None:
    _, s = run_json(world, "summary", "--source", "table")
    assert s["source"]["from_table"] == 0 and s["source"]["fetched"] == 8


# -- misuse ----------------------------------------------------------------------------------


def test_no_bucket_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["summary"], env={}) == 2
    assert capsys.readouterr().err.strip() == "ops: error: No bucket given; pass --bucket NAME or set BUCKET."


def test_missing_bucket_is_one_line(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    argv = world.argv("summary")
    argv[argv.index("--bucket") + 1] = "no-such-bucket-here"
    assert main(argv) == 2
    assert "does not exist" in capsys.readouterr().err


def test_demo_epilogue_prints_the_summary_and_where_the_report_is(world: World, tmp_path: Path) -> None:
    from ops.demo import epilogue

    out = io.StringIO()
    assert epilogue(world.endpoint, world.bucket, tmp_path / "report", queue="cctv-frames", out=out) == 0
    text = out.getvalue()
    assert "status: ok 7, error 1" in text and "NotAnImageError" in text
    assert f"open {(tmp_path / 'report' / 'index.html').as_uri()}" in text
    assert "2 missing" in text and "ops failures --queue cctv-frames" in text
    out = io.StringIO()
    epilogue(world.endpoint, world.bucket, tmp_path / "report", queue="cctv-frames", serving=False, out=out)
    assert "ops failures" not in out.getvalue() and "ARGS=--serve" in out.getvalue()


def test_credentials_come_from_the_env_it_is_given(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """As in make demo, whose stack keeps its dummy credentials out of os.environ."""
    from devstack.moto_server import DUMMY_CREDENTIALS

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    out = io.StringIO()
    assert main(world.argv("summary", "--json"), env={**DUMMY_CREDENTIALS}, out=out) == 0
    assert json.loads(out.getvalue())["results"] == 8
