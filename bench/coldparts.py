"""Cold-path alternatives measured in process (benchmark 1): bundle fetch and session creation.

Fetch (a warm S3 client against the moto bucket, a fresh cache folder each time):
  * ``shipped``: ``shared.bundle.fetch_bundle`` - the manifest, then the runtime files
    (backbone.onnx, head.onnx, imagenet_classes.json) on 4 threads, each streamed in 1 MB
    chunks and hashed as it arrives;
  * ``every file``: the same with ``names=None`` (reports and PNGs too), as before;
  * ``runtime files, sequential / 4 parallel GETs, hash in memory``: whole bodies, hashed
    once in memory (no streaming);
  * ``cached in /tmp``: the bundle already in the cache folder (a re-initialised
    container): shipped hashes each runtime file once and GETs only the manifest.

Sessions (the ONNX Runtime sessions of ``Classifier``, backbone + head):
  * ``shipped``: ORT_ENABLE_ALL on the exported graph;
  * ``pre-optimised (extended) + ALL``: the graph saved after ORT_ENABLE_EXTENDED
    (portable: no hardware-specific layouts) and loaded with ORT_ENABLE_ALL;
  * ``pre-optimised (all) + DISABLE_ALL``: the graph saved after ORT_ENABLE_ALL and loaded with
    no optimisation (ORT warns that such a graph is specific to the CPU it was made on).
Each gives creation ms, the first inference ms, and the parity of its features.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import summary
from shared.bundle import RUNTIME_FILES  # noqa: E402 - the same files the function fetches


def _fetch_runtime(store: Any, prefix: str, target: Path, threads: int) -> None:
    manifest = json.loads(store.get(prefix + "manifest.json").body)
    files = {n: m for n, m in manifest["files"].items() if n in RUNTIME_FILES}

    def one(item: tuple[str, dict[str, Any]]) -> None:
        name, meta = item
        body = store.get(prefix + name).body
        if hashlib.sha256(body).hexdigest() != meta["sha256"]:
            raise RuntimeError(f"{name}: checksum mismatch")
        (target / name).write_bytes(body)

    if threads > 1:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, files.items()))
    else:
        for item in files.items():
            one(item)


def fetch_alternatives(store: Any, version: str, reps: int) -> dict[str, Any]:
    from shared.bundle import fetch_bundle

    prefix = f"models/{version}/"
    times: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-fetch-") as tmp:
        root = Path(tmp)
        warm = root / "warm"
        fetch_bundle(store, "models/", version, warm)
        for r in range(reps):
            cases = {
                "shipped: runtime files, 4 parallel GETs, streamed hashing": lambda d: fetch_bundle(
                    store, "models/", version, d),
                "every file (names=None), 4 parallel GETs, streamed hashing": lambda d: fetch_bundle(
                    store, "models/", version, d, names=None),
                "runtime files, sequential, hash in memory": lambda d: _fetch_runtime(
                    store, prefix, _mk(d / version), 1),
                "runtime files, 4 parallel GETs, hash in memory": lambda d: _fetch_runtime(
                    store, prefix, _mk(d / version), 4),
            }
            for name, fn in cases.items():
                d = root / f"{r}-{len(times)}-{abs(hash(name)) % 10_000}"
                d.mkdir()
                t0 = time.perf_counter()
                fn(d)
                times.setdefault(name, []).append((time.perf_counter() - t0) * 1000)
                shutil.rmtree(d)
            t0 = time.perf_counter()
            fetch_bundle(store, "models/", version, warm)
            times.setdefault("cached in /tmp, shipped (GET manifest, hash runtime files once)", []).append(
                (time.perf_counter() - t0) * 1000)
    return {k: summary(v, 1) for k, v in times.items()}


def _mk(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def session_alternatives(bundle_dir: Path, frame: np.ndarray, reps: int) -> dict[str, Any]:
    import onnxruntime as ort

    from shared.runtime import session_options

    levels = ort.GraphOptimizationLevel
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-preopt-") as tmp:
        pre = {}
        for name, level in (("extended", levels.ORT_ENABLE_EXTENDED), ("all", levels.ORT_ENABLE_ALL)):
            opts = session_options()
            opts.graph_optimization_level = level
            opts.optimized_model_filepath = str(Path(tmp) / f"backbone.{name}.onnx")
            # The weights are external data: the saved graph gets its own weights file beside it.
            opts.add_session_config_entry("session.optimized_model_external_initializers_file_name",
                                          f"backbone.{name}.onnx.data")
            ort.InferenceSession(str(bundle_dir / "backbone.onnx"), opts, providers=["CPUExecutionProvider"])
            pre[name] = Path(opts.optimized_model_filepath)
        cases = {
            "shipped (ALL on the exported graph)": (bundle_dir / "backbone.onnx", levels.ORT_ENABLE_ALL),
            "pre-optimised (extended) + ALL": (pre["extended"], levels.ORT_ENABLE_ALL),
            "pre-optimised (all) + DISABLE_ALL": (pre["all"], levels.ORT_DISABLE_ALL),
        }
        reference = None
        times: dict[str, dict[str, list[float]]] = {}
        for _ in range(reps):
            for name, (path, level) in cases.items():
                opts = session_options()
                opts.graph_optimization_level = level
                t0 = time.perf_counter()
                sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
                ort.InferenceSession(str(bundle_dir / "head.onnx"), session_options(),
                                     providers=["CPUExecutionProvider"])
                t1 = time.perf_counter()
                feats = sess.run(["features"], {"image": frame[None]})[0]
                t2 = time.perf_counter()
                for _ in range(5):
                    sess.run(["features"], {"image": frame[None]})
                t3 = time.perf_counter()
                rec = times.setdefault(name, {"create_ms": [], "first_run_ms": [], "warm_run_ms": []})
                rec["create_ms"].append((t1 - t0) * 1000)
                rec["first_run_ms"].append((t2 - t1) * 1000)
                rec["warm_run_ms"].append((t3 - t2) * 1000 / 5)
                if reference is None:
                    reference = feats
                out.setdefault("max_abs_feature_diff", {})[name] = float(np.max(np.abs(feats - reference)))
        out["sizes_mb"] = {name: round(sum(p.stat().st_size for p in path.parent.glob(path.name + "*")) / 1e6, 1)
                           for name, (path, _) in cases.items()}
        for name, rec in times.items():
            out[name] = {k: summary(v, 1) for k, v in rec.items()}
    return out
