"""Benchmarks 3 and 7: throughput through the local stack, and the function process's peak RSS.

``functions.local.LocalStack`` creates the moto server (its own process), the bucket, the
queue and the ``incoming/`` -> SQS notification, and publishes the cached bundle.  The
worker + real handler run in a separate process (``bench/worker_child.py``, runtime-only
venv), so its peak RSS is the function's.  This process uploads N frames to ``incoming/``
with 8 threads, then waits until all N results are under ``results/``.

Throughput = N / (last result's ``processed_at`` - first upload started); the poller's
own view (when it saw N results) is reported too.  Every result is read back and checked
(status ok, source key, a label).  CPU seconds of the moto server, the worker and the
uploader show where the two cores went.

Alternatives (full run, fewer frames, same stack): ORT ``allow_spinning=0`` and
``intra_op_num_threads=1``; the pipelined service (per-frame inference overlapped with
the other frames' S3 I/O); two concurrent pollers.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench import runtime_venv
from bench.bundles import ensure_bundle
from bench.common import REPO, fmt, frames, log, repo_env, summary
from bench.ctx import Ctx, Figure

CHILD = str(REPO / "bench" / "worker_child.py")
TARGET_FPS = 50.0
TARGET_RSS_MB = 350.0
UPLOAD_THREADS = 8


def _cpu_seconds(pid: int) -> float:
    with contextlib.suppress(OSError, IndexError, ValueError):
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return float("nan")


def _rss_mb(pid: int) -> float:
    with contextlib.suppress(OSError, IndexError, ValueError):
        for row in Path(f"/proc/{pid}/status").read_text().splitlines():
            if row.startswith("VmRSS:"):
                return int(row.split()[1]) / 1024
    return float("nan")


class Worker:
    """The worker child process, with an RSS sampler."""

    def __init__(self, stack: Any, cache_dir: Path, *, ort: str = "baseline", service: str = "shipped",
                 pollers: int = 1) -> None:
        py = str(runtime_venv.ensure())
        cmd = [py, CHILD, "--endpoint", stack.server.endpoint_url, "--queue-url", stack.queue_url,
               "--cache-dir", str(cache_dir), "--batch-size", str(stack.batch_size), "--ort", ort,
               "--service", service, "--pollers", str(pollers)]
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=repo_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if line.strip() != "READY":
            self.proc.kill()
            raise RuntimeError(f"worker child did not start: {line}{self.proc.stderr.read() if self.proc.stderr else ''}")
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.2):
            self.samples.append(_rss_mb(self.proc.pid))

    def cpu(self) -> float:
        return _cpu_seconds(self.proc.pid)

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        assert self.proc.stdin is not None
        self.proc.stdin.write("stop\n")
        self.proc.stdin.flush()
        out, err = self.proc.communicate(timeout=120)
        line = next((ln for ln in out.splitlines() if ln.startswith("BENCH-RESULT ")), None)
        if line is None:
            raise RuntimeError(f"worker child failed: {err[-2000:]}")
        res = json.loads(line.split(" ", 1)[1])
        res["rss_samples_mb"] = {"max": round(max(self.samples, default=float("nan")), 1),
                                 "last": round(self.samples[-1], 1) if self.samples else None}
        return res


def _depth(stack: Any) -> int:
    attrs = stack.sqs.get_queue_attributes(QueueUrl=stack.queue_url, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


def _pass(stack: Any, worker: Worker, prefix: str, data: list[bytes], timeout: float,
          window: int | None = None) -> dict[str, Any]:
    """Upload ``data`` under ``incoming/<prefix>``; wait for every result; check them.

    ``window=None``: upload everything at once (8 threads).  ``window=W``: paced, keep at
    most W messages in the queue (cameras upload continuously; moto's SQS receive costs
    O(queue depth), see the notes).  Completion is the queue draining (every message
    handled and deleted); results are then listed and read once, outside the timing.
    """
    keys = [f"incoming/{prefix}/cam{i % 8}/frame-{i:05d}.jpg" for i in range(len(data))]
    moto_pid = stack.server.process.pid
    cpu0 = {"moto": _cpu_seconds(moto_pid), "worker": worker.cpu(), "uploader": time.process_time()}
    put = lambda i: stack.store.put(keys[i], data[i], content_type="image/jpeg")  # noqa: E731
    t_start = time.time()
    deadline = time.monotonic() + timeout
    max_depth = 0
    with ThreadPoolExecutor(UPLOAD_THREADS) as pool:
        if window is None:
            list(pool.map(put, range(len(keys))))
        else:
            sent = 0
            while sent < len(keys) and time.monotonic() < deadline:
                depth = _depth(stack)
                max_depth = max(max_depth, depth)
                room = min(window - depth, len(keys) - sent)
                if room >= min(10, len(keys) - sent):
                    list(pool.map(put, range(sent, sent + room)))
                    sent += room
                else:
                    time.sleep(0.05)
    t_uploaded = time.time()
    while time.monotonic() < deadline:
        depth = _depth(stack)
        max_depth = max(max_depth, depth)
        if depth == 0:
            break
        time.sleep(0.25)
    t_drained = time.time()
    cpu1 = {"moto": _cpu_seconds(moto_pid), "worker": worker.cpu(), "uploader": time.process_time()}
    with ThreadPoolExecutor(UPLOAD_THREADS) as pool:
        docs = list(pool.map(lambda k: _get_result(stack, k), keys))
    present = [d for d in docs if d is not None]
    ok = [d for k, d in zip(keys, docs) if d and d.get("status") == "ok" and d["source"]["key"] == k and d.get("label")]
    last = max((dt.datetime.fromisoformat(d["processed_at"].replace("Z", "+00:00")).timestamp() for d in present),
               default=float("nan"))
    span = last - t_start
    labels: dict[str, int] = {}
    for d in ok:
        labels[d["label"]] = labels.get(d["label"], 0) + 1
    batch_sizes = sorted({d.get("batch_size") for d in ok})
    per_frame = {k: summary([d["timings_ms"].get(k, 0.0) for d in ok], 1) for k in ("download", "decode", "inference")}
    wall = t_drained - t_start
    cpu = {k: round(cpu1[k] - cpu0[k], 2) for k in cpu0}
    return {
        "mode": "burst" if window is None else f"paced (<= {window} queued)",
        "frames": len(keys), "results_present": len(present), "results_ok": len(ok),
        "fps": len(keys) / span if len(present) == len(keys) else 0.0,
        "fps_queue_drained": len(keys) / wall if len(present) == len(keys) else 0.0,
        "upload_s": round(t_uploaded - t_start, 2), "span_s": round(span, 2), "max_queue_depth": max_depth,
        "labels": labels, "batch_sizes": batch_sizes, "result_timings_ms": per_frame,
        "cpu_s": cpu, "cpu_ms_per_frame": {k: round(v * 1000 / len(keys), 1) for k, v in cpu.items()},
        "wall_s": round(wall, 2),
    }


def _get_result(stack: Any, key: str) -> dict[str, Any] | None:
    from shared.errors import ObjectNotFoundError

    try:
        return stack.store.get_json(stack.result_key(key))
    except ObjectNotFoundError:
        return None


def _warm(stack: Any, worker: Worker, tag: str, data: list[bytes]) -> None:
    """A few frames first, so the model is loaded and the sessions are warm before timing."""
    res = _pass(stack, worker, f"warmup-{tag}", data[:10], timeout=180)
    if res["results_ok"] != 10:
        raise RuntimeError(f"warm-up failed: {res}")


def run(ctx: Ctx) -> dict[str, Any]:
    from functions.local import LocalStack

    n_main = 1000
    figures: list[Figure] = []
    details: dict[str, Any] = {"per_backbone": {}, "upload_threads": UPLOAD_THREADS}
    data, source = frames(n_main)
    details["frames"] = source
    details["frame_kb"] = round(sum(map(len, data)) / len(data) / 1024, 1)
    for backbone in ctx.backbones:
        bdir = ensure_bundle(backbone)
        heavy = backbone != "mobilenet_v2"
        reps = 1 if (ctx.quick or heavy) else max(2, ctx.reps - 1)
        n_variant = 0 if (ctx.quick or heavy) else 300
        with tempfile.TemporaryDirectory(prefix="bench-stack-") as tmp, \
                LocalStack(bundle_dir=bdir, batch_size=10, visibility_timeout=60,
                           model_cache_dir=Path(tmp) / "unused", env=repo_env()) as stack:
            stack.ensure_model(quiet=True)
            log(f"b3 throughput, {backbone}: {reps} x {n_main} frames through moto S3 -> SQS -> worker process")
            worker = Worker(stack, Path(tmp) / "cache-main")
            _warm(stack, worker, "main", data)
            runs = [_pass(stack, worker, f"run{r}", data, timeout=900) for r in range(reps)]
            mem = worker.stop()
            variants: dict[str, list[dict[str, Any]]] = {}
            if n_variant:
                specs = {"baseline": {}, "ort no-spin": {"ort": "no-spin"}, "ort threads=1": {"ort": "threads=1"},
                         "pipelined service": {"service": "pipelined"},
                         "pipelined + no-spin": {"service": "pipelined", "ort": "no-spin"},
                         "2 pollers": {"pollers": 2}}
                log(f"b3 variants, {backbone}: {len(specs)} x {n_variant} frames")
                for name, kw in specs.items():
                    w = Worker(stack, Path(tmp) / f"cache-{len(variants)}", **kw)
                    _warm(stack, w, name.replace(" ", "-").replace("=", ""), data)
                    tag = name.replace(" ", "-").replace("=", "").replace("+", "")
                    variants[name] = [_pass(stack, w, f"var-{tag}", data[:n_variant], timeout=600)]
                    variants[name][0]["peak_rss_mb"] = w.stop()["peak_rss_mb"]
        fps = summary([r["fps"] for r in runs], 1)
        complete = min(r["results_ok"] for r in runs)
        per = {"runs": runs, "fps": fps, "fps_seen_by_poller": summary([r["fps_seen_by_poller"] for r in runs], 1),
               "worker": mem,
               "variants": {k: {"fps": round(v[0]["fps"], 1), "results_ok": v[0]["results_ok"],
                                "frames": v[0]["frames"], "cpu_s": v[0]["cpu_s"],
                                "result_timings_ms": v[0]["result_timings_ms"], "peak_rss_mb": v[0]["peak_rss_mb"]}
                            for k, v in variants.items()}}
        details["per_backbone"][backbone] = per
        figures.append(Figure(3, f"local stack throughput, {n_main} frames (frames/s)", backbone,
                              f">= {TARGET_FPS:g}/s", fmt(fps, "/s"), fps["median"] >= TARGET_FPS, fps))
        figures.append(Figure(3, f"results present and ok, of {n_main}", backbone, f"{n_main} of {n_main}",
                              f"{complete} of {n_main}" + (f" (x{len(runs)} runs)" if len(runs) > 1 else ""),
                              complete == n_main))
        rss = mem["peak_rss_mb"]
        figures.append(Figure(7, "function process peak RSS during b3 (MB)", backbone, f"<= {TARGET_RSS_MB:g} MB",
                              f"{rss:.0f} MB", rss <= TARGET_RSS_MB,
                              {"median": rss, "min": rss, "max": rss, "n": 1}))
    return {"figures": figures, "details": details}
