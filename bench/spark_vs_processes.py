"""Benchmark 9: batch scoring on Spark ``local[2]`` against the same scoring code in 2 plain processes.

The same frames (960x576 JPEGs: kit photos resized, else generated) in the same moto S3,
the same MobileNetV2 bundle, the same code: :func:`batch.worker.score_partition`, i.e.
the function's :class:`functions.service.ClassifyService` plus the Parquet part.

* Spark: :func:`batch.score.execute` on a warm session (its JVM start, 10-45 s, is not
  counted; the Python workers' start and their bundle load are), 4 tasks on 2 slots, so
  each Python worker runs two tasks on one bundle load.
* Processes: 2 ``multiprocessing`` processes (spawned: they import everything and load
  the bundle themselves, as Spark's Python workers do), each scoring half the frames.

Ratio = Spark frames/s / processes frames/s (target >= 0.85); each side writes its own
results prefix and model cache per repetition, so neither finds the other's work.  Also:
bundle loads per Python worker (exactly 1), peak RSS per Python worker (< 400 MB), and
the CPU per frame of each side, all processes included (the JVM and its Python daemon and
workers; the two processes with their imports): docs/scale.md builds on it.  The moto
server's CPU is in neither (the same requests on both sides).  On a machine shared with
other work, the CPU ratio is the steadier of the two ratios.

    .venv/bin/python -m bench --only 9          # or: .venv/bin/python -m bench.spark_vs_processes [--quick]
"""

from __future__ import annotations

import dataclasses
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import fmt, frames, log, repo_env, summary
from bench.ctx import Ctx, Figure

TARGET_RATIO = 0.85
TARGET_RSS_MB = 400.0
BENCH = 9


def _tree_cpu(root: int) -> dict[int, float]:
    """CPU seconds of ``root`` and every process below it (the JVM, Spark's Python daemon and its workers)."""
    stats: dict[int, tuple[int, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        stats[int(entry.name)] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
    tree, grew = {root}, True
    while grew:
        below = {pid for pid, (ppid, _) in stats.items() if ppid in tree} - tree
        tree |= below
        grew = bool(below)
    return {pid: stats[pid][1] for pid in tree if pid in stats}


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _publish(store: Any, bundle: Path) -> str:
    import json

    from shared.bundle import promote, sha256_file, upload_bundle

    raw = json.loads((bundle / "manifest.json").read_text())
    upload_bundle(store, bundle, "models/", raw["version"])
    promote(store, "models/", raw["version"], sha256_file(bundle / "manifest.json"), raw["created_at"])
    return str(raw["version"])


def _process_main(spec: Any, rows: list[tuple[str, str, int, str]], out: Any) -> None:
    """One plain process: the same scoring function Spark's tasks run, over its half of the frames."""
    import pandas as pd

    from batch.worker import score_partition

    frame = pd.DataFrame(rows, columns=["key", "etag", "size", "camera"])
    stats = list(score_partition(spec, None, iter([frame])))[0].to_dict("records")[0]
    out.put(stats)


def _processes(spec: Any, items: list[Any]) -> tuple[float, list[dict[str, Any]], float]:
    """Wall seconds, the two processes' statistics, and all their CPU (imports and bundle loads included)."""
    cpu0 = _children_cpu()
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    half = (len(items) + 1) // 2
    parts = [items[:half], items[half:]]
    started = time.perf_counter()
    procs = [ctx.Process(target=_process_main, args=(dataclasses.replace(spec, run_id=f"{spec.run_id}-p{i}"),
                                                     [(x.key, x.etag, x.size, x.camera) for x in part], queue))
             for i, part in enumerate(parts)]
    for proc in procs:
        proc.start()
    stats = [queue.get(timeout=1800) for _ in procs]
    for proc in procs:
        proc.join()
    return time.perf_counter() - started, stats, _children_cpu() - cpu0


def _spark(spark: Any, cfg: Any, spec: Any, items: list[Any]) -> tuple[float, list[dict[str, Any]], float]:
    from batch.score import execute

    """Wall seconds, the tasks' statistics, and the CPU of the JVM with all its Python processes."""
    jvm = spark.sparkContext._gateway.proc.pid
    before = _tree_cpu(jvm)
    started = time.perf_counter()
    stats = execute(spark, cfg, spec, items, lambda line: None)
    seconds = time.perf_counter() - started
    after = _tree_cpu(jvm)
    return seconds, stats, sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())


def _identity(batches: Any) -> Any:
    yield from batches


def _warm_up(spark: Any) -> None:
    """One throw-away job of the same shape (Python rows -> DataFrame -> mapInPandas), so the JVM's
    first-job costs (class loading, code generation, JIT) count with its start, not against the ratio."""
    rows = spark.sparkContext.parallelize([[("k", "e", 1, "c")]] * 2, 2).flatMap(lambda s: s)
    spark.createDataFrame(rows, "key string, etag string, size long, camera string") \
        .mapInPandas(_identity, "key string, etag string, size long, camera string").collect()


def run(ctx: Ctx) -> dict[str, Any]:
    os.environ.update({k: v for k, v in repo_env().items() if k.startswith("AWS_")})
    from batch.cli import config_from_args
    from batch.plan import Item
    from batch.score import resolve_model
    from batch.session import build_session
    from batch.worker import TaskSpec
    from bench.bundles import ensure_bundle
    from devstack.moto_server import MotoServer
    from shared.config import S3Settings
    from shared.storage import ObjectStore, make_client

    n = 120 if ctx.quick else 400
    # Pairs alternate (processes first, then Spark first): on a shared machine the load moves between runs.
    reps = 1 if ctx.quick else max(4, ctx.reps + 2)
    bundle = ensure_bundle("mobilenet_v2")
    data, source = frames(n)
    details: dict[str, Any] = {"frames": n, "source": source, "reps": reps, "runs": []}
    with MotoServer() as server, tempfile.TemporaryDirectory(prefix="bench-spark-") as tmp:
        store = ObjectStore(make_client(S3Settings(server.endpoint_url, "us-east-1"), max_pool_connections=32),
                            "bench-spark")
        store.client.create_bucket(Bucket=store.bucket)
        _publish(store, bundle)
        for i in range(n):
            store.put(f"incoming/cam{i % 4}/{i:05d}.jpg", data[i % len(data)], content_type="image/jpeg")
        items = sorted((Item(o.key, o.etag, o.size, o.key.split("/")[1]) for o in store.list("incoming/")),
                       key=lambda x: (x.camera, x.key))
        base = ["--bucket", store.bucket, "--endpoint-url", server.endpoint_url, "--no-progress",
                "--frames-per-task", str((n + 3) // 4)]
        cfg = config_from_args(base, os.environ)
        model = resolve_model(store, cfg)
        log(f"bench 9: {n} frames ({source}); starting Spark local[2]")
        spark = build_session("local[2]", conf={"spark.sql.shuffle.partitions": "2"})
        _warm_up(spark)
        try:
            for rep in range(reps):
                for side in (("procs", "spark") if rep % 2 == 0 else ("spark", "procs")):
                    settings = dataclasses.replace(cfg.settings, results_prefix=f"r{rep}-{side}/")
                    spec = TaskSpec(bucket=store.bucket, settings=settings, model_version=model.version,
                                    manifest_sha256=model.manifest_sha256, classes=tuple(model.manifest.classes),
                                    run_id=f"bench{rep}-{side}", table=f"bench/{side}/",
                                    cache_dir=str(Path(tmp) / f"cache-{rep}-{side}"), retries=cfg.retries)
                    if side == "spark":
                        seconds, stats, cpu = _spark(spark, dataclasses.replace(cfg, settings=settings), spec, items)
                    else:
                        seconds, stats, cpu = _processes(spec, items)
                    frames_done = sum(int(s["frames"]) for s in stats)
                    ok = sum(int(s["ok"]) for s in stats)
                    entry = {"rep": rep, "side": side, "seconds": round(seconds, 2),
                             "fps": round(frames_done / seconds, 2), "ok": ok, "frames": frames_done,
                             "tasks": len(stats), "task_cpu_s": round(sum(s["cpu_seconds"] for s in stats), 2),
                             "total_cpu_s": round(cpu, 2),
                             "workers": _workers(stats)}
                    details["runs"].append(entry)
                    log(f"bench 9: rep {rep} {side}: {entry['fps']} frames/s ({ok}/{frames_done} ok, "
                        f"{len(stats)} tasks)")
        finally:
            spark.stop()
    return {"figures": _figures(details), "details": details}


def _workers(stats: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for s in stats:
        w = out.setdefault(s["worker"], {"tasks": 0, "bundle_loads": 0, "peak_rss_mb": 0.0})
        w["tasks"] += 1
        w["bundle_loads"] = max(w["bundle_loads"], int(s["bundle_loads"]))
        w["peak_rss_mb"] = round(max(w["peak_rss_mb"], float(s["peak_rss_mb"])), 1)
    return out


def _figures(details: dict[str, Any]) -> list[Figure]:
    runs = details["runs"]
    by = {(r["rep"], r["side"]): r for r in runs}
    ratios = [by[(rep, "spark")]["fps"] / by[(rep, "procs")]["fps"] for rep in range(details["reps"])]
    spark_runs = [r for r in runs if r["side"] == "spark"]
    loads = [w["bundle_loads"] for r in spark_runs for w in r["workers"].values()]
    rss = [w["peak_rss_mb"] for r in spark_runs for w in r["workers"].values()]
    details["procs_peak_rss_mb"] = summary([w["peak_rss_mb"] for r in runs if r["side"] == "procs"
                                            for w in r["workers"].values()])
    cpu_ms = [1000 * r["total_cpu_s"] / r["frames"] for r in spark_runs]
    proc_cpu_ms = [1000 * r["total_cpu_s"] / r["frames"] for r in runs if r["side"] == "procs"]
    task_cpu_ms = [1000 * r["task_cpu_s"] / r["frames"] for r in runs]
    cpu_ratios = [by[(rep, "procs")]["total_cpu_s"] / by[(rep, "spark")]["total_cpu_s"]
                  for rep in range(details["reps"])]
    all_ok = all(r["ok"] == r["frames"] == details["frames"] for r in runs)
    s_ratio, s_rss = summary(ratios), summary(rss)
    details.update(ratio=s_ratio, cpu_ms_per_frame_spark=summary(cpu_ms), cpu_ms_per_frame_procs=summary(proc_cpu_ms),
                   cpu_ratio=summary(cpu_ratios), task_cpu_ms_per_frame=summary(task_cpu_ms),
                   spark_fps=summary([r["fps"] for r in spark_runs]),
                   procs_fps=summary([r["fps"] for r in runs if r["side"] == "procs"]))
    return [
        Figure(BENCH, "Spark local[2] frames/s / 2 plain processes (same code, frames, store)", "mobilenet_v2",
               f">= {TARGET_RATIO}", f"{fmt(s_ratio, digits=2)} ({fmt(details['spark_fps'])} / "
               f"{fmt(details['procs_fps'])} frames/s){'' if all_ok else ' NOT ALL OK'}",
               s_ratio["median"] >= TARGET_RATIO and all_ok, s_ratio),
        Figure(BENCH, "bundle loads per Spark Python worker", "mobilenet_v2", "exactly 1",
               f"{sorted(set(loads))} over {len(loads)} worker(s)", set(loads) == {1}, None),
        Figure(BENCH, "peak RSS per Spark Python worker", "mobilenet_v2", f"< {TARGET_RSS_MB:.0f} MB",
               fmt(s_rss, "MB"), max(rss) < TARGET_RSS_MB, s_rss),
        Figure(BENCH, "CPU per frame, all of it: JVM + Python workers (Spark) / the 2 processes", "mobilenet_v2",
               "report", f"{fmt(details['cpu_ms_per_frame_spark'])} / {fmt(details['cpu_ms_per_frame_procs'])} ms "
               f"(processes / Spark = {fmt(details['cpu_ratio'], digits=2)}); in the scoring code alone "
               f"{fmt(details['task_cpu_ms_per_frame'])} ms", None, details["cpu_ratio"]),
    ]


def main(argv: list[str] | None = None) -> int:
    quick = "--quick" in (argv if argv is not None else sys.argv[1:])
    out = run(Ctx(quick=quick, backbones=("mobilenet_v2",), reps=3))
    from bench.common import table

    rows = [[f.name, f.target, f.measured, "-" if f.passed is None else ("pass" if f.passed else "MISS")]
            for f in out["figures"]]
    print(table(rows, ["figure", "target", "measured median [min-max]", "verdict"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
