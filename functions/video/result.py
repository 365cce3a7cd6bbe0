"""What a clip's frames add up to: the runs of each label as time segments, the share of
each label, the top ImageNet classes across the clip, and the result document of
:func:`functions.video.pipeline.process_video`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from functions.results import RESULT_SCHEMA_VERSION, VIDEO_PHASES

if TYPE_CHECKING:  # for annotations only: the pipeline imports this module
    from functions.video.pipeline import Pipeline, Timer
    from functions.video.reading import FrameReader, SamplingPlan, VideoInfo

LONGEST_RUNS = 3
IMAGENET_SUMMARY_TOP = 5


# -- summary ------------------------------------------------------------------------------------


def segments(records: list[dict[str, Any]], *, end_frame: int, end_s: float) -> list[dict[str, Any]]:
    """Runs of consecutive sampled frames with one label, as time spans of the source clip.

    A run lasts until the next run's first sampled frame (or the end of the clip), so the
    spans tile the clip; ``frames`` counts source frames, ``sampled`` classified ones.
    """
    starts: list[dict[str, Any]] = []  # the first record of each run
    counts: list[int] = []
    for record in records:
        if starts and starts[-1]["label"] == record["label"]:
            counts[-1] += 1
        else:
            starts.append(record)
            counts.append(1)
    runs = []
    for i, (first, sampled) in enumerate(zip(starts, counts, strict=True)):
        nxt = starts[i + 1] if i + 1 < len(starts) else None
        stop_frame, stop_s = (nxt["frame"], nxt["time_s"]) if nxt else (end_frame, end_s)
        runs.append({"label": first["label"], "start_s": first["time_s"], "end_s": round(stop_s, 4),
                     "start_frame": first["frame"], "end_frame": stop_frame - 1,
                     "frames": stop_frame - first["frame"], "sampled": sampled})
    return runs


def summarise(records: list[dict[str, Any]], classes: list[str], *, end_frame: int, end_s: float,
              imagenet_sums: Mapping[str, float]) -> dict[str, Any]:
    n = len(records)
    counts = Counter(r["label"] for r in records)
    runs = segments(records, end_frame=end_frame, end_s=end_s)
    longest = {c: sorted((r for r in runs if r["label"] == c), key=lambda r: (r["start_s"] - r["end_s"],
                                                                               r["start_s"]))[:LONGEST_RUNS]
               for c in classes}
    imagenet = sorted(imagenet_sums.items(), key=lambda kv: -kv[1])[:IMAGENET_SUMMARY_TOP]
    return {"dominant_label": max(classes, key=lambda c: counts[c]) if n else None,
            "label_share": {c: round(counts[c] / n, 4) if n else 0.0 for c in classes},
            "segments": runs, "longest": longest,
            # Mean over sampled frames; a class outside a frame's top 5 counts as 0 there.
            "imagenet_top": [{"class": k, "mean_probability": round(v / n, 6)} for k, v in imagenet] or None}


# -- the result -------------------------------------------------------------------------------


def build_result(info: VideoInfo, plan: SamplingPlan, reader: FrameReader, pipeline: Pipeline, manifest: Any,
                 timer: Timer, *, total_s: float) -> dict[str, Any]:
    records, last_s = pipeline.records, reader.last_time_s
    assert last_s is not None  # _run_and_finish refuses a clip without frames
    frame_s = 1 / float(info.fps) if info.fps else 0.0
    writer = pipeline.writer
    return {
        "schema_version": RESULT_SCHEMA_VERSION,
        "kind": "video",
        "model": {"version": manifest.version, "backbone": manifest.backbone_name, "classes": manifest.classes,
                  "positive_class": manifest.positive_class, "threshold": manifest.threshold},
        "video": {**info.to_dict(), "frames_decoded": reader.decoded, "frames_sampled": len(records),
                  "bad_packets": reader.bad_packets},
        "sampling": {**plan.to_dict(), "capped": pipeline.sampler.refused_by_cap > 0},
        "summary": summarise(records, manifest.classes, end_frame=reader.decoded, end_s=last_s + frame_s,
                             imagenet_sums=pipeline.imagenet_sums),
        "partial": reader.partial(),
        "annotated": None if writer is None else writer.describe(),
        "timings_ms": timings_ms(timer, total_s),
        "throughput": throughput(total_s, reader.decoded, len(records)),
        "frames": records,
    }


def timings_ms(timer: Timer, total_s: float) -> dict[str, float]:
    """Milliseconds per phase and in all, like every other result's ``timings_ms``."""
    spent = {phase: round(timer.spent.get(phase, 0.0) * 1000, 2) for phase in VIDEO_PHASES}
    return {**spent, "total": round(total_s * 1000, 2)}


def throughput(total_s: float, decoded: int, sampled: int) -> dict[str, float | None]:
    """Frames decoded (and classified) per second of the whole job."""
    if total_s <= 0:
        return {"frames_per_s": None, "sampled_frames_per_s": None}
    return {"frames_per_s": round(decoded / total_s, 1), "sampled_frames_per_s": round(sampled / total_s, 1)}
