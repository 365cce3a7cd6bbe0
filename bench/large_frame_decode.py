"""Benchmark 5: large-frame decode to 224x224, JPEG draft mode (shipped) against a full decode.

The kit's 3872x2592 photo is a progressive JPEG; it is also measured re-encoded as a
baseline JPEG, since draft mode saves far more on those (most cameras write baseline).

``shared.imaging.decode_image`` lets libjpeg decode at 1/2, 1/4 or 1/8 scale (never below
the target) and then resizes; the reference decodes every pixel and resizes.  Each round
decodes each frame several times with both, alternating; the figure is the median over
rounds of the per-round median.  The pixel and feature difference between the two is
reported: the bundles are trained on draft-decoded frames (DECODER_VERSION 1).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from bench import decoders
from bench.common import FRAME_SIZE, fmt, frames, large_frame, log, summary
from bench.ctx import Ctx, Figure

SIZES = ((3872, 2592), (1920, 1080))
TARGET_SIZE = (224, 224)


def _median_ms(fn: Any, data: bytes, n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn(data, TARGET_SIZE)
        times.append((time.perf_counter() - t0) * 1000)
    return float(np.median(times))


def _progressive(data: bytes) -> bool:
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return bool(img.info.get("progressive") or img.info.get("progression"))


def _baseline(data: bytes) -> bytes:
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        buf = io.BytesIO()
        img.convert("RGB").save(buf, "JPEG", quality=90, progressive=False)
    return buf.getvalue()


def run(ctx: Ctx) -> dict[str, Any]:
    figures: list[Figure] = []
    details: dict[str, Any] = {}
    rounds = 3 if ctx.quick else max(5, ctx.reps)
    cases = [(size, *large_frame(size)) for size in SIZES]
    big, big_source = cases[0][1], cases[0][2]
    if _progressive(big):
        # Draft mode scales the IDCT, not the entropy decoding, so a progressive JPEG gains less:
        # the same picture re-encoded as a baseline JPEG shows the difference.
        cases.insert(1, (SIZES[0], _baseline(big), f"{big_source}, re-encoded as a baseline JPEG (q90)"))
    small = frames(1)[0][0]
    cases.append((FRAME_SIZE, small, "the 960x576 frame of benchmarks 1-3"))
    for size, data, source in cases:
        n = 3 if size[0] > 3000 else 10
        log(f"large-frame decode {size[0]}x{size[1]} ({source}): {rounds} rounds x {n} decodes each way")
        draft, full = [], []
        for _ in range(rounds):
            draft.append(_median_ms(decoders.shipped, data, n))
            full.append(_median_ms(decoders.full, data, n))
        a, b = decoders.shipped(data, TARGET_SIZE), decoders.full(data, TARGET_SIZE)
        diff = np.abs(a.astype(int) - b.astype(int))
        speedup = summary([f / d for f, d in zip(full, draft, strict=True)], 2)
        name = f"{size[0]}x{size[1]} {'progressive' if _progressive(data) else 'baseline'}"
        details[name] = {"source": source, "bytes": len(data), "draft_scale": decoders.draft_scale(data, TARGET_SIZE),
                         "draft_ms": summary(draft, 2), "full_ms": summary(full, 2), "speedup": speedup,
                         "max_abs_pixel_diff": int(diff.max()), "mean_abs_pixel_diff": round(float(diff.mean()), 3)}
        if size != FRAME_SIZE:
            for what, ms in (("draft", draft), ("full", full)):
                figures.append(Figure(5, f"decode {name} -> 224x224, {what} (ms)", None, "report",
                                      fmt(summary(ms, 2), "ms"), None, summary(ms, 2)))
            figures.append(Figure(5, f"decode {name}: draft speed-up", None, "report", fmt(speedup, "x"), None,
                                  speedup))
    return {"figures": figures, "details": details}
