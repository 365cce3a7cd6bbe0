"""Benchmark 4: training featurisation from S3 against the raw backbone, in the same run.

``training.features.extract`` (S3 GET + ``decode_image`` on 8 worker threads, overlapped
with batched Keras inference) on a labelled set in a moto S3 server, against the same
Keras model (``keras_backbone.feature_function``, batch 32, what ``training.fit`` uses) on the
same frames already decoded into memory.  Ratio = raw seconds / extract seconds
(1.0 = S3 and decoding cost nothing).  Pairs alternate (raw, extract, raw, ...).

Data: the kit's CCTV crops (``cctv-car-minibus``, 100x100 JPEGs), else generated frames.
Full run, MobileNetV2: extract with 2 and 4 fetch workers instead of 8, and the kit's
large photos (``vehicles-dev``).  CPU seconds of the moto server show its share of the
two cores.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import fmt, keras_home, kit, log, repo_env, summary, weights_for
from bench.ctx import Ctx, Figure

TARGET = 0.85
BATCH = 32


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _seed(store: Any, prefix: str, n: int, source: str) -> str:
    per = n // 2
    if source == "crops" and (kit() / "data" / "cctv-car-minibus").is_dir():
        root = kit() / "data" / "cctv-car-minibus"
        for label in ("car", "minibus"):
            for path in sorted((root / label).glob("*.jpg"))[:per]:
                store.put(f"{prefix}{label}/{path.name}", path.read_bytes(), content_type="image/jpeg")
        return f"{2 * per} kit CCTV crops (cctv-car-minibus, 100x100)"
    if source == "photos" and (kit() / "data" / "vehicles-dev").is_dir():
        count = 0
        for label_dir in sorted(p for p in (kit() / "data" / "vehicles-dev").iterdir() if p.is_dir()):
            photos = sorted(p for p in label_dir.iterdir() if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
            for path in photos[:per]:
                store.put(f"{prefix}{label_dir.name}/{path.name}", path.read_bytes(), content_type="image/jpeg")
                count += 1
        return f"{count} kit photos (vehicles-dev, up to 5120x2880)"
    from devstack.samples import generate

    for label, name, data in generate(("bus", "car"), per, seed=11):
        store.put(f"{prefix}{label}/{name}", data, content_type="image/jpeg")
    return f"{2 * per} generated 320x240 frames"


def _raw(fn: Any, arrays: list[np.ndarray]) -> tuple[float, np.ndarray]:
    outs = []
    t0 = time.perf_counter()
    for i in range(0, len(arrays), BATCH):
        outs.append(np.asarray(fn(np.stack(arrays[i:i + BATCH])), dtype=np.float32))
    return time.perf_counter() - t0, np.concatenate(outs)


def run(ctx: Ctx) -> dict[str, Any]:
    os.environ.update({k: v for k, v in repo_env().items() if k.startswith("AWS_")})
    from devstack.moto_server import MotoServer
    from shared.backbones import BackboneSpec, get_backbone
    from shared.config import DecodeLimits, S3Settings
    from shared.storage import ObjectStore, make_client
    from training.dataset import list_dataset
    from training.features import extract, load_frame
    from training.keras_backbone import build_model, feature_function, resolve_weights

    figures: list[Figure] = []
    details: dict[str, Any] = {"per_backbone": {}, "batch_size": BATCH, "workers": 8}
    limits = DecodeLimits()
    with MotoServer() as server, keras_home() as home:
        store = ObjectStore(make_client(S3Settings(server.endpoint_url, "us-east-1"), max_pool_connections=16),
                            "bench-featurise")
        store.client.create_bucket(Bucket=store.bucket)
        assert server.process is not None  # started by the with statement
        moto_pid = server.process.pid
        for backbone in ctx.backbones:
            heavy = backbone != "mobilenet_v2"
            n = (32 if heavy else 128) if ctx.quick else (48 if heavy else 256)
            reps = 2 if ctx.quick else (ctx.reps if heavy else ctx.reps + 1)
            prefix = f"{backbone}/crops/"
            source = _seed(store, prefix, n, "crops")
            dataset = list_dataset(store, prefix)
            items = list(dataset.items)
            spec = get_backbone(backbone)
            weights = weights_for(backbone, home)
            if home is not None:
                os.environ["KERAS_HOME"] = str(home)  # Keras reads it when first imported
            choice = resolve_weights(spec, weights, home=home or Path("/nonexistent"), seed=42)
            model = build_model(spec, choice, seed=42)

            fn = feature_function(model, spec)  # exactly training.fit._featurise's backbone

            arrays = [load_frame(store, item, spec.input_size, limits) for item in items]
            fn(np.stack(arrays[:BATCH]))  # trace + warm
            log(f"featurisation, {backbone}: {len(items)} images ({source}), {reps} x (raw, extract)")

            def extract_once(workers: int = 8, its: list[Any] = items, *, fn: Callable[[np.ndarray], np.ndarray] = fn,
                             spec: BackboneSpec = spec) -> dict[str, Any]:
                c0 = _cpu(moto_pid)
                p0 = time.process_time()
                first: list[float] = []

                def timed_fn(batch: np.ndarray) -> np.ndarray:
                    first.append(time.perf_counter())
                    return fn(batch)

                t0 = time.perf_counter()
                feats, bad, stats = extract(its, store, timed_fn, size=spec.input_size, limits=limits,
                                            batch_size=BATCH, workers=workers, progress=False)
                return {"seconds": stats.seconds, "feats": feats, "bad": len(bad),
                        "fill_s": first[0] - t0 if first else float("nan"),
                        "inference_s": stats.inference_seconds, "download_decode_s": stats.download_decode_seconds,
                        "moto_cpu_s": _cpu(moto_pid) - c0, "process_cpu_s": time.process_time() - p0}

            raws, exts = [], []
            for _ in range(reps):
                raws.append(_raw(fn, arrays))
                exts.append(extract_once())
            raw_feats = raws[-1][1]
            ext_feats = np.stack([exts[-1]["feats"][i.key] for i in items])
            ratio = summary([r[0] / e["seconds"] for r, e in zip(raws, exts, strict=True)], 3)
            per: dict[str, Any] = {
                "images": len(items), "source": source, "weights": weights,
                "raw_images_per_s": summary([len(items) / r[0] for r in raws], 1),
                "extract_images_per_s": summary([len(items) / e["seconds"] for e in exts], 1),
                "ratio_raw_over_extract": ratio,
                "extract_inference_share": summary([e["inference_s"] / e["seconds"] for e in exts], 3),
                # The pipeline fill: S3 + decode of the first batch, before the first backbone call.  A run
                # of a few hundred images pays it once; training.fit pays it after building the model.
                "fill_s": summary([e["fill_s"] for e in exts], 3),
                "ratio_excluding_fill": summary([r[0] / (e["seconds"] - e["fill_s"])
                                                 for r, e in zip(raws, exts, strict=True)], 3),
                "moto_cpu_ms_per_image": summary([e["moto_cpu_s"] * 1000 / len(items) for e in exts], 1),
                "extract_process_cpu_ms_per_image": summary([e["process_cpu_s"] * 1000 / len(items) for e in exts], 1),
                "max_abs_feature_diff_extract_vs_raw": float(np.max(np.abs(raw_feats - ext_feats))),
                "unreadable": exts[-1]["bad"],
            }
            if not ctx.quick and not heavy:
                alt: dict[str, Any] = {}
                for workers in (4, 4):
                    r, _ = _raw(fn, arrays)
                    e = extract_once(workers)
                    alt.setdefault(f"workers={workers}", []).append(
                        {"ratio": round(r / e["seconds"], 3),
                         "extract_images_per_s": round(len(items) / e["seconds"], 1)})
                ph = f"{backbone}/photos/"
                psource = _seed(store, ph, 64, "photos")
                pitems = list(list_dataset(store, ph).items)
                parrays = [load_frame(store, item, spec.input_size, limits) for item in pitems]
                r, _ = _raw(fn, parrays)
                e = extract_once(8, pitems)
                alt["large photos"] = {"source": psource, "ratio": round(r / e["seconds"], 3),
                                       "extract_images_per_s": round(len(pitems) / e["seconds"], 1),
                                       "raw_images_per_s": round(len(pitems) / r, 1),
                                       "moto_cpu_ms_per_image": round(e["moto_cpu_s"] * 1000 / len(pitems), 1)}
                per["alternatives"] = alt
            details["per_backbone"][backbone] = per
            figures.append(Figure(4, "featurisation from S3 / raw backbone", backbone, f">= {TARGET:g}",
                                  fmt(ratio, "", 3), ratio["median"] >= TARGET, ratio))
            del model
    return {"figures": figures, "details": details}
