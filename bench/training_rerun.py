"""Benchmark 8: a ``training.fit`` re-run that only refits the head, against the first run.

Both runs are ``python -m training.fit`` in a fresh process on the same labelled set in a
moto S3 server (the kit's ``vehicles-dev`` with its ImageNet weights, else generated frames
with random weights).  The first run starts with empty caches: it imports TensorFlow,
builds the Keras model, computes every feature, exports the backbone to ONNX and measures
parity.  The re-run finds every feature in the feature cache and the exported backbone in
the ONNX cache, so it only cross-validates and refits the head, exports it, and writes the
bundle.  Ratio = re-run seconds / first-run seconds; target <= 0.3.  Each repetition uses
fresh cache prefixes, so every first run is a true first run.
"""

from __future__ import annotations

import os
import time
from typing import Any

from bench.common import fmt, keras_home, kit, log, main_python, repo_env, run as run_cmd, summary, weights_for
from bench.ctx import Ctx, Figure

TARGET = 0.3
BENCH = 8


def _seed(store: Any) -> str:
    root = kit() / "data" / "vehicles-dev"
    if root.is_dir():
        n = 0
        for path in sorted(root.glob("*/*")):
            if path.suffix.lower() in {".jpg", ".jpeg", ".png"}:
                store.put(f"train/{path.parent.name}/{path.name}", path.read_bytes(), content_type="image/jpeg")
                n += 1
        return f"vehicles-dev ({n} photos)"
    from devstack.samples import generate

    for label, name, data in generate(("bus", "car"), 60, seed=0, size=(320, 240)):
        store.put(f"train/{label}/{name}", data, content_type="image/jpeg")
    return "120 generated frames (the kit is absent)"


def _fit(endpoint: str, bucket: str, rep: int, weights: str, env: dict[str, str]) -> float:
    cmd = [main_python(), "-m", "training.fit", "--bucket", bucket, "--endpoint-url", endpoint, "--prefix", "train/",
           "--weights", weights, "--no-promote", "--no-progress", "--cache-prefix", f"cache/features/rep{rep}/",
           "--onnx-cache-prefix", f"cache/onnx/rep{rep}/"]
    started = time.perf_counter()
    run_cmd(cmd, env=env, timeout=1800)
    return time.perf_counter() - started


def run(ctx: Ctx) -> dict[str, Any]:
    from devstack.moto_server import DUMMY_CREDENTIALS, MotoServer
    from shared.config import S3Settings
    from shared.storage import ObjectStore, make_client

    os.environ.update(DUMMY_CREDENTIALS)  # only ever moto (this is the benchmark's own process)
    with MotoServer() as server, keras_home() as home:
        store = ObjectStore(make_client(S3Settings(server.endpoint_url, "us-east-1")), "bench-rerun")
        store.client.create_bucket(Bucket=store.bucket)
        data = _seed(store)
        weights = weights_for("mobilenet_v2", home) if (kit() / "data" / "vehicles-dev").is_dir() else "random"
        env = repo_env({"KERAS_HOME": str(home)} if home is not None else None)
        firsts, reruns = [], []
        for rep in range(1 if ctx.quick else ctx.reps):
            firsts.append(_fit(server.endpoint_url, store.bucket, rep, weights, env))
            reruns.append(_fit(server.endpoint_url, store.bucket, rep, weights, env))
            log(f"  rep {rep}: first {firsts[-1]:.1f} s, re-run {reruns[-1]:.1f} s")
    ratios = [r / f for f, r in zip(firsts, reruns, strict=True)]
    ratio = summary(ratios)
    figure = Figure(BENCH, "training re-run (head refit only) / first run", "mobilenet_v2", f"<= {TARGET}",
                    f"{fmt(ratio, digits=3)} ({fmt(summary(reruns))} s of {fmt(summary(firsts))} s)",
                    ratio["median"] <= TARGET, ratio)
    return {"figures": [figure], "details": {"data": data, "weights": weights, "first_s": firsts, "rerun_s": reruns,
                                              "ratios": ratios}}
