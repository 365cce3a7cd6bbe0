"""Video mode: classify the frames of a CCTV clip and draw the result back onto it.

Streaming throughout: frames are decoded one at a time, sampled, batched through the
classifier and (when asked) annotated and encoded, so memory is bounded by a batch and
a few pending frames, never by the clip.  PyAV is imported inside functions, so a
still-frame cold start never loads FFmpeg.

    python -m functions.video clip.mp4 --out annotated.mp4 --json result.json
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol, TextIO

import numpy as np
from PIL import Image

from functions.events import VIDEO_EXTENSIONS, is_video_key  # noqa: F401 - part of this module's API

# VideoLimits and the InvalidVideoError family live in shared/ (the cloud function uses them
# too); they are re-exported here, so `from functions.video import VideoLimits` keeps working.
from shared.config import VideoLimits
from shared.errors import (
    CCTVError,
    ConfigError,
    EmptyVideoError,
    InvalidVideoError,  # noqa: F401 - re-exported
    NotAVideoError,
    NoVideoStreamError,
    UnsupportedCodecError,
    VideoTooLargeError,
    VideoTooLongError,
)
from shared.imaging import fit_to_input

RESULT_SCHEMA_VERSION = 1
BATCH_SIZE = 16
# Decoded frames wait, unannotated, until their sampled frame is classified; bound the
# bytes they hold (7 frames of 1080p, 48 of 640x480) rather than their count.
PENDING_BYTES = 64 * 1024 * 1024
MAX_PENDING_FRAMES = 4 * BATCH_SIZE
# One undecodable packet is skipped; this many in a row means the rest is garbage.
MAX_BAD_PACKETS = 10
# Declared frame counts can be off by a frame or two (edit lists, B-frame delay).
FRAME_COUNT_SLACK = 2
LONGEST_RUNS = 3
IMAGENET_SUMMARY_TOP = 5
FRAME_IMAGENET_TOP = 3
DEFAULT_BUNDLE = Path("build/local-bundle")  # what `make demo` (functions.local) writes

Clock = Callable[[], float]


class VideoTooManyFramesError(VideoTooLongError):
    """More frames than MAX_VIDEO_DECODED_FRAMES: a very high frame rate, or a header that
    understates the count.  Every frame is decoded and re-encoded, so this bounds the work."""


class FrameClassifier(Protocol):
    """What video mode needs of :class:`shared.runtime.Classifier`."""

    manifest: Any

    @property
    def input_size(self) -> tuple[int, int]: ...

    def predict(self, images: np.ndarray, *, top_k: int = 3) -> list[Any]: ...


# -- limits and keys ---------------------------------------------------------------------


@contextlib.contextmanager
def video_workspace(dir: str | None = None) -> Iterator[tuple[Path, Path]]:
    """Paths for a downloaded clip and its annotated mp4 in a private temp folder.

    The names are generated, never taken from object keys, and the folder is removed on
    exit whatever happened.
    """
    with tempfile.TemporaryDirectory(prefix="cctv-video-", dir=dir) as folder:
        yield Path(folder) / "input", Path(folder) / "annotated.mp4"


def _name(name: str) -> str:
    return repr(name)


def check_video_size(size: int, limits: VideoLimits, name: str) -> None:
    """Refuse a clip over the byte limit; the handler can call this on a HEAD, before downloading."""
    if size > limits.max_bytes:
        raise VideoTooLargeError(
            f"{_name(name)} is {size:,} bytes, over the {limits.max_bytes:,}-byte limit; send a shorter "
            "clip or raise MAX_VIDEO_BYTES.", key=name, size=size)
    if size == 0:
        raise NotAVideoError(f"{_name(name)} is empty (0 bytes); upload the clip again.", key=name)


# -- opening and decoding -------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    container: str
    codec: str
    width: int
    height: int
    fps: Fraction | None
    duration_s: float | None
    frames_declared: int | None
    bytes: int

    @property
    def expected_frames(self) -> int | None:
        if self.frames_declared:
            return self.frames_declared
        if self.duration_s and self.fps:
            return math.ceil(self.duration_s * float(self.fps))
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"container": self.container, "codec": self.codec, "width": self.width, "height": self.height,
                "fps": None if self.fps is None else round(float(self.fps), 3),
                "duration_s": None if self.duration_s is None else round(self.duration_s, 3),
                "frames_declared": self.frames_declared, "bytes": self.bytes}


def _duration(container: Any, stream: Any) -> float | None:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        return float(container.duration) / 1_000_000  # AV_TIME_BASE
    return None


def _probe(container: Any, name: str, size: int) -> tuple[Any, VideoInfo]:
    if not container.streams.video:
        others = ", ".join(sorted({s.type for s in container.streams})) or "no streams at all"
        raise NoVideoStreamError(f"{_name(name)} has no video stream ({others}); upload a camera clip "
                                 "(.mp4, .avi, .mov or .mkv with H.264, MPEG-4 or similar).", key=name)
    stream = container.streams.video[0]
    if stream.codec_context is None:
        raise UnsupportedCodecError(f"{_name(name)} uses a video codec this FFmpeg build cannot decode; "
                                    "re-encode it as H.264 (for example `ffmpeg -i in -c:v libx264 out.mp4`).",
                                    key=name)
    fps = stream.average_rate or stream.guessed_rate or stream.base_rate
    info = VideoInfo(container=container.format.name, codec=stream.codec_context.name, width=stream.width,
                     height=stream.height, fps=Fraction(fps) if fps else None, duration_s=_duration(container, stream),
                     frames_declared=stream.frames or None, bytes=size)
    return stream, info


@contextlib.contextmanager
def open_video(path: Path, name: str, size: int) -> Iterator[tuple[Any, Any, VideoInfo]]:
    """Open ``path`` with FFmpeg; yield the container, its first video stream and what it declares."""
    import av

    try:
        container = av.open(str(path), mode="r")
    except av.error.FFmpegError as exc:
        raise NotAVideoError(
            f"{_name(name)} could not be opened as a video ({exc.strerror or exc}); it is damaged, cut short "
            "(an MP4 loses its index when truncated) or not a video. Upload the complete clip.", key=name) from None
    try:
        stream, info = _probe(container, name, size)
        stream.thread_type = "AUTO"  # frame threads: decoding is a large share of the work
        yield container, stream, info
    finally:
        container.close()


def check_video_duration(info: VideoInfo, limits: VideoLimits, name: str) -> None:
    if info.duration_s is not None and info.duration_s > limits.max_duration_s:
        raise VideoTooLongError(
            f"{_name(name)} lasts {info.duration_s:.1f} s, over the {limits.max_duration_s:g}-second limit; "
            "cut it into shorter clips or raise MAX_VIDEO_SECONDS.", key=name, duration_s=round(info.duration_s, 3))


def _too_many_pixels(name: str, width: int, height: int, max_pixels: int, *, where: str = "") -> VideoTooLargeError:
    return VideoTooLargeError(
        f"{_name(name)} has {width}x{height} = {width * height:,}-pixel frames{where}, over the {max_pixels:,}-pixel "
        "limit; scale it down (for example `ffmpeg -i in -vf scale=1920:-2 out.mp4`) or raise MAX_VIDEO_PIXELS.",
        key=name, width=width, height=height)


def check_video_info(info: VideoInfo, limits: VideoLimits, name: str) -> None:
    """Refuse, before decoding a frame, a clip whose header declares more than the limits allow:
    frames over ``max_pixels`` (memory), a duration over ``max_duration_s`` or more frames than
    ``decoded_frames_limit`` (time: every frame is decoded, converted and re-encoded)."""
    if info.width * info.height > limits.max_pixels:
        raise _too_many_pixels(name, info.width, info.height, limits.max_pixels)
    check_video_duration(info, limits, name)
    frames, limit = info.expected_frames, limits.decoded_frames_limit
    if frames is not None and frames > limit:
        rate = "" if info.frames_declared or info.fps is None else \
            f" ({info.duration_s:.1f} s at {float(info.fps):g} fps)"
        raise VideoTooManyFramesError(
            f"{_name(name)} has {frames:,} frames{rate}, over the {limit:,}-frame limit; cut it into shorter "
            "clips, lower its frame rate or raise MAX_VIDEO_DECODED_FRAMES.", key=name, frames=frames)


@dataclasses.dataclass
class DecodedFrame:
    """One frame of the clip; ``source`` is what ``convert`` turns into RGB (an av.VideoFrame)."""

    index: int
    time_s: float
    source: Any
    convert: Callable[[Any], Image.Image]
    _image: Image.Image | None = None
    nbytes: int = 0  # what it holds while it waits to be annotated, at most (see frame_bytes)

    def image(self) -> Image.Image:
        """The RGB frame at source size, converted once (the decoded source is let go then)."""
        if self._image is None:
            self._image, self.source = self.convert(self.source), None
        return self._image


def rgb_converter() -> Callable[[Any], Image.Image]:
    """av.VideoFrame -> RGB PIL image, with a converter (swscale context) of its own.

    ``VideoFrame.to_image`` gives the same pixels, but copies them row by row in Python,
    and swscale contexts shared with the encoder are rebuilt at every switch; this is
    several times faster.
    """
    from av.video.reformatter import VideoReformatter

    reformatter = VideoReformatter()
    return lambda frame: Image.fromarray(reformatter.reformat(frame, format="rgb24").to_ndarray())


class FrameReader:
    """Yield a stream's frames once, skipping undecodable packets.

    Afterwards ``decoded``, ``bad_packets`` and :meth:`partial` tell how far it got.
    """

    def __init__(self, container: Any, stream: Any, info: VideoInfo, *, max_duration_s: float, name: str,
                 max_frames: int | None = None, max_pixels: int | None = None) -> None:
        self._container, self._stream, self._info = container, stream, info
        self._max_duration_s, self._name = max_duration_s, name
        self._max_frames, self._max_pixels = max_frames, max_pixels
        self._origin: int | None = stream.start_time
        self._convert = rgb_converter()
        self.decoded = 0
        self.last_time_s: float | None = None
        self.bad_packets = 0
        self.error: str | None = None
        self.gave_up = False

    def __iter__(self) -> Iterator[DecodedFrame]:
        import av

        run = 0
        try:
            for packet in self._container.demux(self._stream):
                try:
                    frames = packet.decode()
                except av.error.FFmpegError as exc:
                    self.bad_packets, run, self.error = self.bad_packets + 1, run + 1, exc.strerror or str(exc)
                    if run >= MAX_BAD_PACKETS:
                        self.gave_up = True
                        return
                    continue
                run = 0
                for frame in frames:
                    yield self._wrap(frame)
        except av.error.FFmpegError as exc:  # the demuxer itself failed: the container is damaged
            self.error, self.gave_up = exc.strerror or str(exc), True

    def _wrap(self, frame: Any) -> DecodedFrame:
        # The header was checked before decoding; these catch a header that lied.
        if self._max_frames is not None and self.decoded >= self._max_frames:
            raise VideoTooManyFramesError(
                f"{_name(self._name)} holds more than {self._max_frames:,} frames, the decoded-frame limit; cut "
                "it into shorter clips, lower its frame rate or raise MAX_VIDEO_DECODED_FRAMES.", key=self._name,
                frames_decoded=self.decoded)
        if self._max_pixels is not None and frame.width * frame.height > self._max_pixels:
            raise _too_many_pixels(self._name, frame.width, frame.height, self._max_pixels,
                                   where=f" from frame {self.decoded}")
        item = DecodedFrame(self.decoded, self._time_of(frame), frame, self._convert,
                            nbytes=frame_bytes(frame.width, frame.height))
        if item.time_s > self._max_duration_s:  # the header under-declared the duration
            raise VideoTooLongError(
                f"{_name(self._name)} runs past {self._max_duration_s:g} s, the duration limit; cut it into "
                "shorter clips or raise MAX_VIDEO_SECONDS.", key=self._name)
        self.decoded += 1
        self.last_time_s = item.time_s
        return item

    def _time_of(self, frame: Any) -> float:
        if frame.pts is None or not self._stream.time_base:
            return self.decoded / float(self._info.fps) if self._info.fps else 0.0
        if self._origin is None:
            self._origin = frame.pts
        return max(0.0, float((frame.pts - self._origin) * self._stream.time_base))

    def _shortfall(self) -> str | None:
        """How much less than its header declares the clip held, or None if it held it all."""
        info, declared = self._info, self._info.frames_declared
        if declared is not None:
            return f"{self.decoded} of the {declared} frames" if self.decoded < declared - FRAME_COUNT_SLACK else None
        # MKV and some others declare a duration but no frame count.
        if info.duration_s and info.fps and self.last_time_s is not None:
            reached = self.last_time_s + 1 / float(info.fps)
            if reached < info.duration_s - FRAME_COUNT_SLACK / float(info.fps):
                return f"{reached:.2f} s of the {info.duration_s:.2f} s"
        return None

    def partial(self) -> dict[str, Any] | None:
        """Where and why decoding stopped early, or None when the whole clip was read."""
        short = self._shortfall()
        if not (short or self.gave_up):
            return None
        ffmpeg = f" (FFmpeg: {self.error})" if self.error else ""
        if short:
            reason = (f"The clip ends after {short} its header declares{ffmpeg}; it was probably cut short "
                      "during upload. Upload the complete clip for a full result.")
        else:
            reason = (f"Decoding stopped after frame {self.decoded}{ffmpeg}; the rest of the clip is damaged. "
                      "Upload an intact copy for a full result.")
        stopped_s = None if self.last_time_s is None else round(self.last_time_s, 4)
        return {"stopped_at_frame": self.decoded, "stopped_at_s": stopped_s,
                "frames_declared": self._info.frames_declared, "reason": reason}


# -- sampling ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SamplingPlan:
    """Which frames to classify: every one (``fps=None``), or one per ``1/fps`` seconds."""

    fps: float | None
    max_frames: int
    requested_fps: float | None

    def to_dict(self) -> dict[str, Any]:
        return {"mode": "every_frame" if self.fps is None else "fps",
                "fps": None if self.fps is None else round(self.fps, 4),
                "requested_fps": self.requested_fps, "max_frames": self.max_frames}


def plan_sampling(info: VideoInfo, limits: VideoLimits) -> SamplingPlan:
    """Every frame, or ``sample_fps``; slowed down evenly when that would exceed ``max_frames``.

    Spreading the budget over the whole clip beats classifying its first ``max_frames``
    frames and nothing after.
    """
    fps = limits.sample_fps
    if fps is not None and info.fps is not None and fps >= float(info.fps):
        fps = None  # asking for at least the source rate is every frame
    expected = info.expected_frames if fps is None else (info.duration_s or 0) * fps
    if expected is not None and expected > limits.max_frames and info.duration_s:
        fps = limits.max_frames / info.duration_s
    return SamplingPlan(None if fps is None else float(fps), limits.max_frames, limits.sample_fps)


class Sampler:
    """Decides frame by frame, by timestamp, so variable frame rates sample evenly too."""

    def __init__(self, plan: SamplingPlan) -> None:
        self.plan = plan
        self.taken = 0
        self.refused_by_cap = 0
        self._slot = -1

    def take(self, time_s: float) -> bool:
        if self.plan.fps is not None:
            slot = math.floor(time_s * self.plan.fps + 1e-6)
            if slot <= self._slot:
                return False
            self._slot = slot
        if self.taken >= self.plan.max_frames:  # a safety net when the header lied about the length
            self.refused_by_cap += 1
            return False
        self.taken += 1
        return True


# -- classification and annotation --------------------------------------------------------------


class Timer:
    """Seconds spent per phase, by an injected clock."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.spent: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        start = self.clock()
        try:
            yield
        finally:
            self.spent[phase] += self.clock() - start


def frame_record(index: int, time_s: float, prediction: Any, positive: str | None) -> dict[str, Any]:
    top = prediction.imagenet_top
    return {"frame": index, "time_s": round(time_s, 4), "label": prediction.label,
            "probability": prediction.probability,
            "positive_probability": prediction.probabilities.get(positive) if positive else None,
            "imagenet_top": None if top is None else top[:FRAME_IMAGENET_TOP]}


class Pipeline:
    """Sampled frames go to the classifier in batches; every frame goes to the writer once
    the prediction it should show (the latest sampled one) is known."""

    def __init__(self, classifier: FrameClassifier, sampler: Sampler, timer: Timer, *, writer: Any = None,
                 batch_size: int = BATCH_SIZE, max_pending: int = MAX_PENDING_FRAMES,
                 max_pending_bytes: int = PENDING_BYTES) -> None:
        self.classifier, self.sampler, self.timer, self.writer = classifier, sampler, timer, writer
        self.batch_size, self.max_pending, self.max_pending_bytes = batch_size, max_pending, max_pending_bytes
        self._pending_bytes = 0  # by the frames' real sizes: a header can understate them
        self.positive = classifier.manifest.positive_class
        self.records: list[dict[str, Any]] = []
        self.imagenet_sums: dict[str, float] = defaultdict(float)
        self._batch: list[tuple[int, float, np.ndarray]] = []
        self._pending: list[DecodedFrame] = []
        self._shown = 0  # records[:_shown] have been reached by the writer

    def feed(self, item: DecodedFrame) -> None:
        if self.sampler.take(item.time_s):
            with self.timer("decode"):  # conversion and resizing count as decoding
                self._batch.append((item.index, item.time_s,
                                    fit_to_input(item.image(), self.classifier.input_size)))
        if self.writer is not None:
            self._pending.append(item)
            self._pending_bytes += item.nbytes
        if len(self._batch) >= self.batch_size or len(self._pending) >= self.max_pending \
                or self._pending_bytes >= self.max_pending_bytes:
            self.flush()

    def flush(self) -> None:
        self._classify()
        self._annotate()

    def _classify(self) -> None:
        if not self._batch:
            return
        with self.timer("inference"):
            predictions = self.classifier.predict(np.stack([a for _, _, a in self._batch]),
                                                  top_k=IMAGENET_SUMMARY_TOP)
        for (index, time_s, _), prediction in zip(self._batch, predictions, strict=True):
            self.records.append(frame_record(index, time_s, prediction, self.positive))
            for entry in prediction.imagenet_top or ():
                self.imagenet_sums[entry["class"]] += entry["probability"]
        self._batch.clear()

    def _annotate(self) -> None:
        for item in self._pending:
            while self._shown < len(self.records) and self.records[self._shown]["frame"] <= item.index:
                self._shown += 1
            # The first frame is always sampled, so every frame has a prediction to show.
            record = self.records[self._shown - 1]
            bar = record["positive_probability"] if self.positive else record["probability"]
            with self.timer("encode"):
                self.writer.write(item.image(), label=record["label"],
                                  probability=record["probability"], bar_value=bar)
        self._pending.clear()
        self._pending_bytes = 0


def frame_bytes(width: int, height: int) -> int:
    """A waiting frame's memory: yuv420p as decoded plus its RGB copy."""
    return max(1, width * height * 9 // 2)


def max_pending_frames(info: VideoInfo) -> int:
    return max(1, min(MAX_PENDING_FRAMES, PENDING_BYTES // frame_bytes(info.width, info.height)))


def run_frames(frames: Iterable[DecodedFrame], pipeline: Pipeline, timer: Timer) -> None:
    """Pull frames one at a time (timed as decoding) and push each through the pipeline."""
    it = iter(frames)
    while True:
        with timer("decode"):
            item = next(it, None)
        if item is None:
            break
        pipeline.feed(item)
    pipeline.flush()


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


# -- the whole job ------------------------------------------------------------------------------


def _file_size(path: Path, name: str) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        raise NotAVideoError(f"{path} does not exist; check the path to the clip.", key=name) from None


def _writer(out_path: Path | None, info: VideoInfo, manifest: Any) -> Any:
    if out_path is None:
        return None
    from functions.annotate import AnnotatedWriter

    return AnnotatedWriter(out_path, info.fps or Fraction(25), bar_name=manifest.positive_class,
                           threshold=manifest.threshold)


def process_video(path_in: Path, classifier: FrameClassifier, *, out_path: Path | None = None,
                  limits: VideoLimits = VideoLimits(), clock: Clock = time.perf_counter, name: str | None = None,
                  batch_size: int = BATCH_SIZE) -> dict[str, Any]:
    """Classify the clip at ``path_in``; write the annotated mp4 to ``out_path`` when given.

    ``name`` (the object key, say) is only used in messages.  Raises an
    ``InvalidVideoError`` subclass for a clip that cannot be used at all; a clip that
    stops decoding part-way gives the frames it has and a ``partial`` entry.
    """
    started = clock()
    name = name or path_in.name
    size = _file_size(path_in, name)
    check_video_size(size, limits, name)
    timer = Timer(clock)
    with open_video(path_in, name, size) as (container, stream, info):
        check_video_info(info, limits, name)
        plan = plan_sampling(info, limits)
        reader = FrameReader(container, stream, info, max_duration_s=limits.max_duration_s, name=name,
                             max_frames=limits.decoded_frames_limit, max_pixels=limits.max_pixels)
        writer = _writer(out_path, info, classifier.manifest)
        pipeline = Pipeline(classifier, Sampler(plan), timer, writer=writer, batch_size=batch_size,
                            max_pending=max_pending_frames(info))
        _run_and_finish(reader, pipeline, timer, writer, name)
    return build_result(info, plan, reader, pipeline, classifier.manifest, timer, total_s=clock() - started)


def _run_and_finish(reader: FrameReader, pipeline: Pipeline, timer: Timer, writer: Any, name: str) -> None:
    try:
        run_frames(reader, pipeline, timer)
        if reader.decoded == 0:
            ffmpeg = f" (FFmpeg: {reader.error})" if reader.error else ""
            raise EmptyVideoError(f"{_name(name)} has no video frames that could be decoded{ffmpeg}; it is empty "
                                  "or was cut short before its first frame. Upload the complete clip.", key=name)
        if writer is not None:
            with timer("encode"):
                writer.close()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise


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
        "timings": _timings(timer, total_s, reader.decoded, len(records)),
        "frames": records,
    }


def _timings(timer: Timer, total_s: float, decoded: int, sampled: int) -> dict[str, Any]:
    spent = {f"{phase}_s": round(timer.spent.get(phase, 0.0), 4) for phase in ("decode", "inference", "encode")}
    per_s = (lambda n: round(n / total_s, 1)) if total_s > 0 else (lambda n: None)
    return {**spent, "total_s": round(total_s, 4), "frames_per_s": per_s(decoded),
            "sampled_frames_per_s": per_s(sampled)}


# -- command line -------------------------------------------------------------------------------


def parse_s3_bundle(spec: str) -> tuple[str, str, str | None]:
    """``s3://bucket/models/`` -> (bucket, "models/", None: use latest.json);
    ``s3://bucket/models/v3`` -> (bucket, "models/", "v3"); ``s3://bucket`` -> (bucket, "models/", None)."""
    bucket, _, path = spec.removeprefix("s3://").partition("/")
    if not bucket:
        raise ConfigError(f"{spec!r} names no bucket; use s3://bucket/models/ or s3://bucket/models/VERSION.")
    if not path:
        return bucket, "models/", None
    if path.endswith("/"):
        return bucket, path, None
    prefix, _, version = path.rpartition("/")
    return bucket, f"{prefix}/" if prefix else "", version


@contextlib.contextmanager
def open_classifier(spec: str, env: Mapping[str, str]) -> Iterator[Any]:
    """A classifier from a bundle folder or an S3 prefix (fetched into a temp folder, removed after)."""
    from shared.runtime import Classifier

    if not spec.startswith("s3://"):
        yield Classifier.from_dir(Path(spec))
        return
    from shared.bundle import fetch_bundle, resolve_version
    from shared.config import S3Settings
    from shared.storage import ObjectStore, make_client

    bucket, prefix, pinned = parse_s3_bundle(spec)
    store = ObjectStore(make_client(S3Settings.from_env(env)), bucket)
    version, manifest_sha256 = resolve_version(store, prefix, pinned)
    with tempfile.TemporaryDirectory(prefix="cctv-bundle-") as cache:
        bundle_dir, manifest = fetch_bundle(store, prefix, version, Path(cache), manifest_sha256)
        yield Classifier(bundle_dir, manifest)


def _positive(kind: type) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not value > 0:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
        return value
    return parse


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m functions.video",
                                     description="Classify the frames of a CCTV clip and summarise them.")
    parser.add_argument("input", type=Path, help="the clip (.mp4, .avi, .mov, .mkv)")
    parser.add_argument("--out", type=Path, help="write an annotated H.264 .mp4 here")
    parser.add_argument("--bundle", default=str(DEFAULT_BUNDLE),
                        help="a bundle folder, or s3://bucket/models/ (latest) or s3://bucket/models/VERSION "
                             f"(default: {DEFAULT_BUNDLE}, which `make demo` writes)")
    parser.add_argument("--json", type=Path, help="write the full result (every sampled frame) here")
    parser.add_argument("--sample-fps", type=_positive(float),
                        help="classify this many frames per second (default: every frame, or $VIDEO_SAMPLE_FPS)")
    parser.add_argument("--max-frames", type=_positive(int),
                        help="classify at most this many frames, spread over the clip "
                             "(default: 1500, or $MAX_VIDEO_FRAMES)")
    return parser


def _limits(args: argparse.Namespace, env: Mapping[str, str]) -> VideoLimits:
    limits = VideoLimits.from_env(env)
    if args.sample_fps is not None:
        limits = dataclasses.replace(limits, sample_fps=args.sample_fps)
    if args.max_frames is not None:
        limits = dataclasses.replace(limits, max_frames=args.max_frames)
    return limits


def _check_out(args: argparse.Namespace) -> None:
    if args.out is None:
        return
    if args.out.suffix.lower() != ".mp4":
        raise ConfigError(f"--out {args.out} must end in .mp4: the annotated clip is H.264 in MP4.")
    if args.out.resolve() == args.input.resolve():
        raise ConfigError("--out names the input clip; choose another file so the clip is not overwritten.")


def format_summary(result: dict[str, Any], source: str) -> str:
    v, s, t, m = result["video"], result["summary"], result["timings"], result["model"]
    fps = f"{v['fps']:g} fps" if v["fps"] else "unknown fps"
    lines = [f"{source}: {v['codec']} {v['width']}x{v['height']}, {fps}, {v['frames_decoded']} frames decoded, "
             f"{v['frames_sampled']} classified (model {m['version']}, {m['backbone']})"]
    for label, share in s["label_share"].items():
        best = s["longest"][label][:1]
        span = f"; longest {best[0]['start_s']:.2f}-{best[0]['end_s']:.2f} s ({best[0]['frames']} frames)" \
            if best else ""
        lines.append(f"  {label:<12} {100 * share:5.1f}% of classified frames{span}")
    lines.append(f"  {len(s['segments'])} segment(s); mostly {s['dominant_label']}")
    if s["imagenet_top"]:
        lines.append("  ImageNet: " + ", ".join(f"{e['class']} {e['mean_probability']:.2f}"
                                                for e in s["imagenet_top"][:3]))
    if result["partial"]:
        lines.append(f"  PARTIAL: {result['partial']['reason']}")
    lines.append(f"  {t['total_s']:.2f} s (decode {t['decode_s']:.2f}, inference {t['inference_s']:.2f}, "
                 f"encode {t['encode_s']:.2f}): {t['frames_per_s']} frames/s")
    return "\n".join(lines)


def main(argv: list[str] | None = None, *, env: Mapping[str, str] = os.environ, stdout: TextIO = sys.stdout,
         stderr: TextIO = sys.stderr) -> int:
    args = _parser().parse_args(argv)
    try:
        _check_out(args)
        limits = _limits(args, env)
        with open_classifier(args.bundle, env) as classifier:
            result = process_video(args.input, classifier, out_path=args.out, limits=limits, name=str(args.input))
        if args.json:
            args.json.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    except CCTVError as exc:
        print(f"error: {exc}", file=stderr)
        return exc.exit_code
    except OSError as exc:  # an unwritable --out/--json, a full disk
        print(f"error: {exc.strerror or exc} ({exc.filename or 'file'}); check the path and free space.",
              file=stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - the command line promises one line, never a traceback
        print(f"error: unexpected {type(exc).__name__}: {exc}. This is a bug; please report it with the clip.",
              file=stderr)
        return 1
    print(format_summary(result, str(args.input)), file=stdout)
    if args.out:
        print(f"  annotated clip: {args.out}", file=stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
