"""Benchmark 2: warm per-frame latency, in process: decode + backbone + head on a 960x576 JPEG.

The shipped path is ``shared.imaging.decode_image`` then ``Classifier.predict`` on a batch
of one (what the service does per frame).  Each round times every frame once; p50/p99 are
per round, and the figure is the median (and range) over rounds.

Alternatives, measured in the same rounds so machine noise hits them alike:
  * ONNX Runtime session options (threads, spinning, optimisation level, fixed batch) on the
    whole frame path, and on the backbone alone with preloaded arrays;
  * batch size: per-image backbone time at batch 1, 4, 10 and 32;
  * full decode (no draft mode) against the shipped draft decode.
Correctness: every variant's features and probabilities are compared to the baseline's.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from bench import decoders, ortvariants
from bench.bundles import ensure_bundle
from bench.common import fmt, frames, log, percentile, summary
from bench.ctx import Ctx, Figure

P50_MS, P99_MS = 12.0, 25.0
FRAME_VARIANTS = ("baseline", "threads=1", "no-spin", "threads=2,no-spin", "fixed-batch=1")
BACKBONE_VARIANTS = ("baseline", "threads=1", "threads=2", "no-spin", "threads=2,no-spin", "opt=extended",
                     "opt=basic", "opt=disable", "fixed-batch=1")
HEAVY_VARIANTS = ("baseline", "threads=1", "no-spin", "threads=2,no-spin")  # ResNet50: ORT options only
BATCHES = (1, 4, 10, 32)


def _frame_pass(clf: Any, data: list[bytes], size: tuple[int, int], decode: Any) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"total": [], "decode": [], "predict": []}
    for blob in data:
        t0 = time.perf_counter()
        img = decode(blob, size)
        t1 = time.perf_counter()
        clf.predict(img[None])
        t2 = time.perf_counter()
        out["total"].append((t2 - t0) * 1000)
        out["decode"].append((t1 - t0) * 1000)
        out["predict"].append((t2 - t1) * 1000)
    return out


def _backbone_ms(clf: Any, batch: np.ndarray, repeats: int) -> float:
    """Median wall ms per image of ``clf.features`` on a preloaded batch."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        clf.features(batch)
        times.append((time.perf_counter() - t0) * 1000 / len(batch))
    return float(np.median(times))


def _head_ms(clf: Any, feats: np.ndarray, repeats: int = 50) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        clf.head_probabilities(feats)
        times.append((time.perf_counter() - t0) * 1000)
    return float(np.median(times))


def _parity(base: Any, other: Any, batch: np.ndarray) -> dict[str, Any]:
    f0, _ = base.features(batch)
    f1 = np.concatenate([other.features(batch[i:i + 1])[0] for i in range(len(batch))])  # batch 1: any variant
    p0, p1 = base.head_probabilities(f0), other.head_probabilities(f1)
    return {"max_abs_feature_diff": float(np.max(np.abs(f0 - f1))),
            "max_abs_probability_diff": float(np.max(np.abs(p0 - p1))),
            "labels_agree": bool(np.array_equal(p0.argmax(1), p1.argmax(1)))}


def run(ctx: Ctx) -> dict[str, Any]:
    figures: list[Figure] = []
    details: dict[str, Any] = {"per_backbone": {}}
    data, source = frames(60)
    details["frames"] = source
    rounds = 2 if ctx.quick else ctx.reps
    for backbone in ctx.backbones:
        bdir = ensure_bundle(backbone)
        heavy = backbone != "mobilenet_v2"
        n_frames = (30 if heavy else 150) if ctx.quick else (40 if heavy else 200)
        n_variant = (0 if ctx.quick else (15 if heavy else 100))
        bb_repeats = 2 if heavy else 10
        stream = [data[i % len(data)] for i in range(n_frames)]
        variants = BACKBONE_VARIANTS if not heavy else HEAVY_VARIANTS
        clfs = {v: ortvariants.classifier(bdir, v) for v in (variants if not ctx.quick else ("baseline",))}
        base = clfs["baseline"]
        size = base.input_size
        arrays = np.stack([decoders.shipped(blob, size) for blob in data[:32]])
        for clf in clfs.values():  # warm-up: first runs allocate arenas and pick kernels
            for _ in range(3):
                clf.predict(arrays[:1])
            clf.features(arrays[:1])
        parity = {v: _parity(base, c, arrays[:8]) for v, c in clfs.items() if v != "baseline"}
        full_arr = np.stack([decoders.full(blob, size) for blob in data[:8]])
        f_draft, _ = base.features(arrays[:8])
        f_full, _ = base.features(full_arr)
        full_vs_draft = {"max_abs_pixel_diff": int(np.max(np.abs(arrays[:8].astype(int) - full_arr.astype(int)))),
                         "mean_abs_pixel_diff": float(np.mean(np.abs(arrays[:8].astype(int) - full_arr.astype(int)))),
                         "max_abs_feature_diff": float(np.max(np.abs(f_draft - f_full))),
                         "labels_agree": bool(np.array_equal(base.head_probabilities(f_draft).argmax(1),
                                                             base.head_probabilities(f_full).argmax(1)))}
        log(f"warm latency, {backbone}: {rounds} rounds x {n_frames} frames"
            + (f"; {len(FRAME_VARIANTS) - 1} frame variants x {n_variant}, backbone variants, batches"
               if n_variant else ""))
        per_round: list[dict[str, float]] = []
        frame_variants: dict[str, list[dict[str, float]]] = {}
        bb: dict[str, list[float]] = {}
        batches: dict[str, list[float]] = {}
        decode_cmp: dict[str, list[float]] = {"draft (shipped)": [], "full decode": []}
        for _ in range(rounds):
            t = _frame_pass(base, stream, size, decoders.shipped)
            per_round.append({"p50": percentile(t["total"], 50), "p90": percentile(t["total"], 90),
                              "p99": percentile(t["total"], 99), "max": max(t["total"]),
                              "decode_p50": percentile(t["decode"], 50), "predict_p50": percentile(t["predict"], 50)})
            if not n_variant:
                continue
            sub = stream[:n_variant]
            for v in FRAME_VARIANTS if not heavy else HEAVY_VARIANTS:
                t = _frame_pass(clfs[v], sub, size, decoders.shipped)
                frame_variants.setdefault(v, []).append({"p50": percentile(t["total"], 50),
                                                         "p99": percentile(t["total"], 99)})
            t = _frame_pass(base, sub, size, decoders.full)
            decode_cmp["full decode"].append(percentile(t["decode"], 50))
            t = _frame_pass(base, sub, size, decoders.shipped)
            decode_cmp["draft (shipped)"].append(percentile(t["decode"], 50))
            for v, clf in clfs.items():
                bb.setdefault(v, []).append(_backbone_ms(clf, arrays[:1], bb_repeats))
            for v in ("baseline", "no-spin"):
                for n in BATCHES if not heavy else BATCHES[:3]:
                    batches.setdefault(f"{v}, batch {n}", []).append(
                        _backbone_ms(clfs[v], arrays[:n], max(2, bb_repeats * 4 // n)))
        p50 = summary([r["p50"] for r in per_round], 2)
        p99 = summary([r["p99"] for r in per_round], 2)
        feats, _ = base.features(arrays[:1])
        per = {
            "frames_per_round": n_frames, "rounds": rounds,
            "p50_ms": p50, "p99_ms": p99,
            "p90_ms": summary([r["p90"] for r in per_round], 2),
            "max_ms": summary([r["max"] for r in per_round], 2),
            "decode_p50_ms": summary([r["decode_p50"] for r in per_round], 2),
            "predict_p50_ms": summary([r["predict_p50"] for r in per_round], 2),
            "head_only_ms": round(_head_ms(base, feats), 3),
            "ort_default_intra_op_threads": "0 (ORT picks the physical core count)",
            "frame_variants_ms": {v: {"p50": summary([r["p50"] for r in rs], 2),
                                      "p99": summary([r["p99"] for r in rs], 2)}
                                  for v, rs in frame_variants.items()},
            "backbone_batch1_ms": {v: summary(x, 2) for v, x in bb.items()},
            "backbone_per_image_ms_by_batch": {n: summary(x, 2) for n, x in batches.items()},
            "decode_960x576_p50_ms": {k: summary(v, 2) for k, v in decode_cmp.items() if v},
            "variant_parity_vs_baseline": parity,
            "full_decode_vs_draft": full_vs_draft,
            "variant_descriptions": {v: ortvariants.VARIANTS[v] for v in clfs},
        }
        details["per_backbone"][backbone] = per
        figures.append(Figure(2, "warm frame latency p50 (ms)", backbone, f"<= {P50_MS:g} ms", fmt(p50, "ms"),
                              p50["median"] <= P50_MS, p50))
        figures.append(Figure(2, "warm frame latency p99 (ms)", backbone, f"<= {P99_MS:g} ms", fmt(p99, "ms"),
                              p99["median"] <= P99_MS, p99))
    return {"figures": figures, "details": details}
