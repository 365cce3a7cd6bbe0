"""Benchmark 1: cold start of the function against the Keras path, in the same run.

Function: a fresh CPython 3.12 process with boto3 alone (what the Lambda runtime has), with
the deployment zip unpacked on ``PYTHONPATH`` (``bench.shipped``: the shipped modules and
bytecode, as ``/var/task``), imports ``functions.classify``, and its ``handler`` gets an S3
event for a 960x576 JPEG under ``incoming/``: it builds the App from the environment,
resolves ``models/latest.json``, fetches and checks the bundle from a moto S3 server into
an empty ``MODEL_CACHE_DIR``, opens the ONNX sessions, classifies the frame and writes
``results/...json``.  Measured: spawn -> handler returned (the result is in S3).  Without a
CPython 3.12 it falls back to the runtime-only venv and the repo (and says so in the JSON).

Keras: a fresh process in the development venv builds the same backbone with the same
weights (``training.keras_backbone.build_model``), loads the LightGBM head (``head.txt``),
decodes the same frame and predicts.

Runs alternate (function, Keras, function, ...) so load on this shared machine hits both.
Alternatives (full run): a bundle already in /tmp (a re-initialised container), as whole
cold starts; and, in process (``bench.coldparts``), the bundle fetch and the ONNX session
creation done other ways.  ``-X importtime`` shows where the imports go.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import runtime_venv, shipped
from bench.bundles import ensure_bundle
from bench.common import (
    REPO,
    fmt,
    frames,
    keras_home,
    log,
    main_python,
    repo_env,
    run as run_cmd,
    summary,
    weights_for,
)
from bench.ctx import Ctx, Figure
from functions.results import result_key_for
from shared.config import FunctionSettings

CHILD = str(REPO / "bench" / "cold_child.py")
TARGET_S = 0.6
TARGET_RATIO = 10.0


def _spawn(cmd: list[str], env: dict[str, str], timeout: float = 300) -> dict[str, Any]:
    t_spawn = time.time()
    proc = subprocess.run(cmd, cwd=REPO, env=env, text=True, capture_output=True, timeout=timeout)
    t_exit = time.time()
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("BENCH-RESULT ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"cold child failed ({proc.returncode}): {proc.stderr[-2000:]}")
    out = json.loads(line.split(" ", 1)[1])
    out["wall_to_result_s"] = out["t_result"] - t_spawn
    out["process_wall_s"] = t_exit - t_spawn
    out["interpreter_start_s"] = out["t_main"] - t_spawn
    out["stderr_tail"] = proc.stderr[-500:]
    return out


def _function_env(endpoint: str, bucket: str, cache_dir: str, code: Path = REPO) -> dict[str, str]:
    # PYTHONDONTWRITEBYTECODE stays set (repo_env): like Lambda's read-only /var/task, the
    # process can use the bytecode it was given but never leaves any for the next one.
    env = repo_env({"BUCKET": bucket, "MODEL_BUCKET": bucket, "S3_ENDPOINT_URL": endpoint,
                    "MODEL_CACHE_DIR": cache_dir, "LOG_LEVEL": "INFO", "PYTHONPATH": str(code)})
    for name in ("KERAS_HOME", "PYTHONSTARTUP", "VIRTUAL_ENV"):
        env.pop(name, None)
    return env


def _import_profile(py: str, env: dict[str, str]) -> dict[str, Any]:
    """Where the cold path's imports go (``-X importtime``, cumulative ms), and the marginal
    cost of ``functions.video`` once numpy and Pillow are in (what a lazy import would save)."""
    proc = subprocess.run([py, "-X", "importtime", "-c",
                           "import functions.classify, boto3, onnxruntime, botocore.client"],
                          cwd=REPO, env=env, text=True, capture_output=True, timeout=120)
    wanted = {"functions.classify", "numpy", "PIL.Image", "onnxruntime", "boto3", "botocore.client",
              "functions.service", "functions.video.pipeline", "functions.events", "shared.runtime", "shared.bundle"}
    out: dict[str, Any] = {}
    for row in proc.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", row)
        if m and m.group(4) in wanted and m.group(4) not in out:
            out[m.group(4)] = round(int(m.group(2)) / 1000, 1)
    code = ("import time, numpy, PIL.Image, shared.imaging, shared.runtime, functions.events; "
            "t = time.perf_counter(); import functions.video.pipeline; print((time.perf_counter() - t) * 1000)")
    marginal = []
    for _ in range(5):
        p = subprocess.run([py, "-c", code], cwd=REPO, env=env, text=True, capture_output=True, timeout=60)
        if p.returncode == 0:
            marginal.append(float(p.stdout.strip()))
    if marginal:
        out["functions.video marginal (after numpy, PIL, shared)"] = summary(marginal, 1)
    code = ("import time; t = time.perf_counter(); import boto3; t1 = time.perf_counter(); "
            "boto3.client('s3', region_name='us-east-1'); print((t1 - t) * 1000, (time.perf_counter() - t1) * 1000)")
    b3 = [tuple(map(float, p.stdout.split())) for p in
          (subprocess.run([py, "-c", code], cwd=REPO, env=env, text=True, capture_output=True, timeout=60)
           for _ in range(5)) if p.returncode == 0]
    if b3:
        out["boto3 import (ms)"] = summary([a for a, _ in b3], 1)
        out["boto3 first S3 client (ms)"] = summary([b for _, b in b3], 1)
    return out


def _function_runtime() -> tuple[str, Path, str]:
    """(python, code folder, description): the shipped zip on CPython 3.12 when possible."""
    py = shipped.python()
    if py is not None:
        code = shipped.package()
        return str(py), code, (f"the deployment zip (scripts/build_package.sh, with its bytecode) unpacked in "
                               f"{code.name}, on CPython 3.12 with {runtime_venv.boto3_pin()} only, as on Lambda")
    py = runtime_venv.ensure()
    # No CPython 3.12 for the cp312 zip: the runtime-only venv, with our modules compiled as
    # the zip ships them.
    run_cmd([str(py), "-m", "compileall", "-q", "functions", "shared"])
    return str(py), REPO, ("runtime-only venv (no CPython 3.12 for the zip): "
                           + ", ".join(runtime_venv.packages()) + "; repo code precompiled")


def run(ctx: Ctx) -> dict[str, Any]:
    from devstack.moto_server import MotoServer
    from shared import bundle
    from shared.config import S3Settings
    from shared.storage import ObjectStore, make_client

    rt_python, code, runtime = _function_runtime()
    fn_reps = 3 if ctx.quick else 5
    keras_reps = 1 if ctx.quick else 3
    variant_reps = 0 if ctx.quick else 2
    frame = frames(1)[0][0]
    results: dict[str, Any] = {"function_runtime": runtime, "per_backbone": {}}
    figures: list[Figure] = []
    with MotoServer() as server, keras_home() as home, tempfile.TemporaryDirectory(prefix="bench-cold-") as tmp:
        os.environ.update({k: v for k, v in repo_env().items() if k.startswith("AWS_")})
        client = make_client(S3Settings(server.endpoint_url, "us-east-1"))
        frame_path = Path(tmp) / "frame.jpg"
        frame_path.write_bytes(frame)
        keys = iter(f"incoming/cold/{i:04d}.jpg" for i in range(10_000))
        for backbone in ctx.backbones:
            bdir = ensure_bundle(backbone)
            bucket = f"bench-cold-{backbone.replace('_', '-')}"
            client.create_bucket(Bucket=bucket)
            store = ObjectStore(client, bucket)
            manifest = bundle.verify_dir(bdir)
            bundle.upload_bundle(store, bdir, "models/", manifest.version)
            bundle.promote(store, "models/", manifest.version,
                           bundle.sha256_bytes((bdir / bundle.MANIFEST).read_bytes()), manifest.raw["created_at"])

            def fn_once(variant: str = "baseline", cache: str | None = None, *,
                        store: ObjectStore = store, bucket: str = bucket) -> dict[str, Any]:
                key = next(keys)
                store.put(key, frame, content_type="image/jpeg")
                cache_dir = cache or tempfile.mkdtemp(dir=tmp, prefix="model-cache-")
                env = _function_env(server.endpoint_url, bucket, cache_dir, code)
                out = _spawn([rt_python, CHILD, "function", key, variant], env)
                if not out["ok"]:
                    raise RuntimeError(f"the cold function did not classify the frame: {out['response']}")
                result_key = result_key_for(FunctionSettings.from_env(env), key)
                assert result_key is not None, key  # the bench's frames are under INPUT_PREFIX
                out["result"] = store.get_json(result_key)
                return out

            kenv = repo_env({"KERAS_HOME": str(home)} if home else None)
            weights = weights_for(backbone, home)

            keras_once = functools.partial(_spawn, [main_python(), CHILD, "keras", backbone, weights,
                                                    str(frame_path), str(bdir / "head.txt")], kenv)

            log(f"cold start, {backbone}: {fn_reps} function and {keras_reps} Keras processes, interleaved")
            fn_runs: list[dict[str, Any]] = []
            keras_runs: list[dict[str, Any]] = []
            for i in range(max(fn_reps, keras_reps)):
                if i < fn_reps:
                    fn_runs.append(fn_once())
                if i < keras_reps:
                    keras_runs.append(keras_once())
            variants: dict[str, list[dict[str, Any]]] = {}
            if variant_reps:
                warm_cache = tempfile.mkdtemp(dir=tmp, prefix="model-cache-warm-")
                fn_once(cache=warm_cache)  # fills it
                for _ in range(variant_reps):
                    for name in ("baseline", "bundle_in_tmp"):
                        if name == "bundle_in_tmp":
                            variants.setdefault(name, []).append(fn_once(cache=warm_cache))
                        else:
                            variants.setdefault(name, []).append(fn_once(variant=name))
            fn_wall = summary([r["wall_to_result_s"] for r in fn_runs])
            keras_wall = summary([r["wall_to_result_s"] for r in keras_runs])
            # Ratios pair each Keras run with the function run next to it (there are fewer Keras runs).
            ratio = summary([k["wall_to_result_s"] / f["wall_to_result_s"]
                             for k, f in zip(keras_runs, fn_runs, strict=False)], 2)
            phase_names = sorted({p for r in fn_runs for p in r["phases_s"]})
            breakdown = {
                "interpreter_start_s": summary([r["interpreter_start_s"] for r in fn_runs]),
                "import_handler_s": summary([r["import_s"] for r in fn_runs]),
                "handler_s": summary([r["handler_s"] for r in fn_runs]),
                **{f"{p}_s": summary([r["phases_s"].get(p, 0.0) for r in fn_runs]) for p in phase_names},
                "result_timings_ms": {k: summary([r["result"]["timings_ms"].get(k, 0.0) for r in fn_runs], 1)
                                      for k in ("download", "decode", "inference")},
                "process_wall_s": summary([r["process_wall_s"] for r in fn_runs]),
            }
            keras_breakdown = {p: summary([r["phases_s"][p] for r in keras_runs]) for p in keras_runs[0]["phases_s"]}
            keras_breakdown["import_s"] = summary([r["import_s"] for r in keras_runs])
            per = {
                "weights": weights,
                "function_wall_to_result_s": fn_wall,
                "keras_wall_to_result_s": keras_wall,
                "keras_over_function": ratio,
                "function_breakdown": breakdown,
                "keras_breakdown": keras_breakdown,
                "heavy_modules_in_function": sorted({m for r in fn_runs for m in r["heavy_modules_loaded"]}),
                "label": fn_runs[0]["result"]["label"],
                "variants_wall_to_result_s": {k: summary([r["wall_to_result_s"] for r in v])
                                              for k, v in variants.items()},
                "variants_onnx_sessions_s": {k: summary([r["phases_s"].get("onnx_sessions", 0.0) for r in v])
                                             for k, v in variants.items()},
                "variants_inference_ms": {k: summary([r["result"]["timings_ms"]["inference"] for r in v], 1)
                                          for k, v in variants.items()},
                "variants_peak_rss_mb": {k: summary([r["peak_rss_mb"] for r in v], 1) for k, v in variants.items()},
                "function_peak_rss_mb": summary([r["peak_rss_mb"] for r in fn_runs], 1),
            }
            if not ctx.quick:
                from bench import coldparts
                from shared.imaging import decode_image

                log(f"cold-path parts, {backbone}: bundle fetch and session creation alternatives, in process")
                per["fetch_alternatives_ms"] = coldparts.fetch_alternatives(store, manifest.version, 3)
                per["session_alternatives"] = coldparts.session_alternatives(
                    bdir, decode_image(frame, manifest.input_size), 3)
            results["per_backbone"][backbone] = per
            figures.append(Figure(1, "cold start, spawn -> result written (s)", backbone, f"<= {TARGET_S} s",
                                  fmt(fn_wall, "s", 3), fn_wall["median"] <= TARGET_S, fn_wall))
            figures.append(Figure(1, "cold start, Keras path (s)", backbone, "-", fmt(keras_wall, "s", 2), None,
                                  keras_wall))
            figures.append(Figure(1, "cold start, Keras / function", backbone, f">= {TARGET_RATIO:g}x",
                                  fmt(ratio, "x", 1), ratio["median"] >= TARGET_RATIO, ratio))
        results["import_profile_ms"] = _import_profile(rt_python, _function_env(server.endpoint_url, "x", tmp, code))
    return {"figures": figures, "details": results}
