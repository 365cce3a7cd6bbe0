"""A batch job killed mid-run keeps the parts that finished, and the same command resumes it.

Two real ``python -m batch.score`` processes, each with its own JVM (the shared in-process
session of test_batch.py cannot be killed without killing pytest): the first is killed
with SIGKILL to its process groups once a Parquet part is in the bucket (at best while a task
has written its results but not yet its part), the second runs to the end.  24 inputs at
2 frames a task on ``local[1]`` make 12 tasks run one after the other, about 0.3 s each
with the tiny bundle: a kill polled every 50 ms lands mid-run without any sleep in the
shipped code.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from shared.config import S3Settings
from shared.storage import ObjectStore
from tests.functional.test_batch import ENV_LIMITS, args, new_bucket, read_table, seed_frames

pytestmark = pytest.mark.batch  # pyspark, pandas, pyarrow: not in the function's runtime

REPO = Path(__file__).resolve().parents[2]
FRAMES_PER_TASK = 2
PARTS = "tables/results/model_version=tiny-v1/"
START_TIMEOUT_S = 150.0  # a JVM start takes 25-45 s on a busy 2-core machine


def etags(store: ObjectStore, prefix: str) -> dict[str, str]:
    return {info.key: str(info.etag) for info in store.list(prefix)}


def session_pids(sid: int) -> list[int]:
    """Live (not zombie) processes of a session: the driver, its JVM and the Python workers, which the
    pyspark daemon moves into a process group of their own, so killing the driver's group misses them."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def wait_for_kill_point(store: ObjectStore, proc: subprocess.Popen[bytes], log: Path, n_tasks: int) -> None:
    """Until a part is in the bucket and, preferably, a task has written results but not yet its part (results are
    listed before parts, and parts only grow, so more results than parts hold is such a moment); failing that,
    half the parts."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        results, parts = len(etags(store, "results/")), len(etags(store, PARTS))
        if parts and (results > FRAMES_PER_TASK * parts or parts >= n_tasks // 2):
            return
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"the run ended or hung before the kill point (exit {proc.returncode}): {tail(log)}")
        time.sleep(0.05)


def kill_job(sid: int) -> None:
    """SIGKILL to every process group of the job at once, as a lost machine or container would: the driver's
    (with its JVM) and the pyspark daemon's (the Python workers, mid-task), which would otherwise hang up
    its workers with SIGHUP, a beat after the JVM dies, and let a task finish its part meanwhile."""
    groups = {sid}
    for pid in session_pids(sid):
        with contextlib.suppress(ProcessLookupError):
            groups.add(os.getpgid(pid))
    for group in sorted(groups, key=lambda g: g != sid):  # the driver's first
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)


def wait_until_gone(sid: int, timeout_s: float = 30.0) -> list[int]:
    """The session's processes still alive after ``timeout_s`` (none, when the killed job wound down)."""
    deadline = time.monotonic() + timeout_s
    while (alive := session_pids(sid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return alive


def tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:] if path.exists() else f"({path} is missing)"


def test_a_killed_run_keeps_its_parts_and_the_same_command_scores_only_the_rest(
        s3_client: Any, s3_settings: S3Settings, tmp_path: Path) -> None:
    from batch.session import check_java
    from shared.errors import JavaNotFoundError

    try:
        check_java(os.environ)
    except JavaNotFoundError as exc:
        pytest.skip(str(exc))
    if not Path("/proc/self/stat").exists():
        pytest.skip("needs /proc to find the killed job's Python workers")
    store = new_bucket(s3_client, tmp_path)
    labels = seed_frames(store)  # 24 inputs, 4 of them bad
    inputs = etags(store, "incoming/")
    summary, temp, log = tmp_path / "summary.json", tmp_path / "tmp", tmp_path / "driver.log"
    temp.mkdir()
    command = [sys.executable, "-m", "batch.score",
               *args(store, str(s3_settings.endpoint_url), "--master", "local[1]",
                     "--frames-per-task", str(FRAMES_PER_TASK), "--summary-out", str(summary))]
    # Spark's scratch folders (left behind by a killed JVM) and its log stay in this test's folder.
    env = {**os.environ, **ENV_LIMITS, "TMPDIR": str(temp), "SPARK_LOCAL_DIRS": str(temp)}

    n_tasks = len(labels) // FRAMES_PER_TASK
    t0 = time.monotonic()
    with log.open("wb") as out:
        killed = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    try:
        wait_for_kill_point(store, killed, log, n_tasks)
        kill_job(killed.pid)
        killed.wait(30)
        left = wait_until_gone(killed.pid)
    finally:
        for pid in session_pids(killed.pid):  # only what this test started, by pid
            os.kill(pid, signal.SIGKILL)
    t_killed = time.monotonic() - t0
    assert killed.returncode == -signal.SIGKILL and not left, left

    # What the killed job left: whole parts only, every row of them a frame it was given, once.
    parts = etags(store, PARTS)
    before = read_table(store, s3_settings)
    assert 1 <= len(parts) < n_tasks and not summary.exists(), (len(parts), tail(log))
    assert len(before) == FRAMES_PER_TASK * len(parts) and before["key"].is_unique
    [killed_run] = set(before["run_id"])
    assert set(before["key"]) <= set(labels)
    assert not s3_client.list_multipart_uploads(Bucket=store.bucket).get("Uploads")  # no half-written part
    docs_before = etags(store, "results/")  # the killed run's parts' results, and any the next task wrote

    t1 = time.monotonic()
    with log.open("ab") as out:
        finished = subprocess.run(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                  timeout=START_TIMEOUT_S + 60)
    t_resumed = time.monotonic() - t1
    assert finished.returncode == 0, tail(log)
    second = json.loads(summary.read_text())

    # The second run scored exactly the keys the table lacked; results already there were kept, not redone.
    done = set(before["key"])
    result_of = {f"results/{key.removeprefix('incoming/')}.json": key for key in labels}
    kept = {key for doc, key in result_of.items() if doc in docs_before and key not in done}
    assert (second["frames"], second["already_scored"], second["scored"]) == (24, len(done), 24 - len(done))
    assert second["total"] | {"frames_per_s": None} == {
        "frames": 24, "ok": 20, "error": 4, "failed": 0, "skipped": 0, "scored_this_run": 24 - len(done),
        "reused": len(kept), "labels": {"bus": 7, "car": 13}, "frames_per_s": None,
        "error_types": {"DecompressionBombError": 1, "ImageTooLargeError": 1, "NotAnImageError": 1,
                        "TruncatedImageError": 1}}

    # The killed run's parts are untouched; the new ones hold the rest: one row per input, nothing lost or doubled.
    after = etags(store, PARTS)
    assert {key: after[key] for key in parts} == parts and len(after) == len(parts) + second["tasks"]
    rows = read_table(store, s3_settings).set_index("key")
    assert sorted(rows.index) == sorted(labels)
    assert {k for k, run in rows["run_id"].items() if run == second["run_id"]} == set(labels) - done
    assert set(rows.loc[sorted(done), "run_id"]) == {killed_run}

    # Exactly one result document per input, for its current ETag and this model, each as its row says.
    docs = etags(store, "results/")
    assert sorted(docs) == sorted(result_of)
    assert {doc: docs[doc] for doc in docs_before} == docs_before
    for doc_key, key in result_of.items():
        doc, row = store.get_json(doc_key), rows.loc[key]
        assert doc["source"]["etag"] == inputs[key] == row["etag"] and doc["model"]["version"] == "tiny-v1"
        assert (doc["status"], doc.get("label")) == (row["status"], row["label"]), key
        assert row["status"] == ("error" if labels[key] == "error" else "ok") and bool(row["reused"]) == (key in kept)
    print(f"killed after {t_killed:.1f} s with {len(parts)}/{n_tasks} parts and {len(kept)} result(s) beyond them; "
          f"resumed in {t_resumed:.1f} s")


def test_a_part_goes_up_in_one_put_so_a_killed_task_leaves_no_upload_behind(
        s3_client: Any, s3_settings: S3Settings, tmp_path: Path) -> None:
    from batch import table

    store = new_bucket(s3_client, tmp_path)
    fs = table.filesystem(s3_settings)
    stream = fs.open_output_stream(f"{store.bucket}/{PARTS}part-open.parquet")
    try:
        stream.write(b"x" * 100_000)
        uploads = s3_client.list_multipart_uploads(Bucket=store.bucket).get("Uploads")
    finally:
        stream.close()  # an S3 stream left open hangs the interpreter's exit
    assert not uploads  # while the stream was open: nothing a kill could have orphaned
    row = {"key": "incoming/cam/0.jpg", "camera": "cam", "status": "ok", "reused": False, "attempts": 1}
    table.write_part(fs, table.part_path(store.bucket, "tables/results/", "tiny-v1", "run", 0), [row], ["car"])
    tags = etags(store, PARTS)
    assert len(tags) == 2 and not any("-" in tag for tag in tags.values())  # "<md5>-<n>" would be a multipart upload
