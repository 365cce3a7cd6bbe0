"""Reading a clip: the limits checked before and while decoding, opening it with FFmpeg
(PyAV), decoding its frames one at a time, and choosing which of them to classify.

PyAV is imported inside the functions that need it, so importing this module never
loads FFmpeg.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import tempfile
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

from PIL import Image

from shared.config import VideoLimits
from shared.errors import (
    NotAVideoError,
    NoVideoStreamError,
    UnsupportedCodecError,
    VideoTooLargeError,
    VideoTooLongError,
    VideoTooManyFramesError,
)

# One undecodable packet is skipped; this many in a row means the rest is garbage.
MAX_BAD_PACKETS = 10
# Declared frame counts can be off by a frame or two (edit lists, B-frame delay).
FRAME_COUNT_SLACK = 2


# -- limits and keys ---------------------------------------------------------------------


@contextlib.contextmanager
def video_workspace(dir: str | None = None) -> Iterator[tuple[Path, Path]]:
    """Paths for a downloaded clip and its annotated mp4 in a private temp folder.

    The names are generated, never taken from object keys, and the folder is removed on
    exit whatever happened.
    """
    with tempfile.TemporaryDirectory(prefix="cctv-video-", dir=dir) as folder:
        yield Path(folder) / "input", Path(folder) / "annotated.mp4"


def quoted(name: str) -> str:
    """How messages name a clip: its key or path, quoted."""
    return repr(name)


def check_video_size(size: int, limits: VideoLimits, name: str) -> None:
    """Refuse a clip over the byte limit; the handler can call this on a HEAD, before downloading."""
    if size > limits.max_bytes:
        raise VideoTooLargeError(
            f"{quoted(name)} is {size:,} bytes, over the {limits.max_bytes:,}-byte limit; send a shorter "
            "clip or raise MAX_VIDEO_BYTES.", key=name, size=size)
    if size == 0:
        raise NotAVideoError(f"{quoted(name)} is empty (0 bytes); upload the clip again.", key=name)


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
        raise NoVideoStreamError(f"{quoted(name)} has no video stream ({others}); upload a camera clip "
                                 "(.mp4, .avi, .mov or .mkv with H.264, MPEG-4 or similar).", key=name)
    stream = container.streams.video[0]
    if stream.codec_context is None:
        raise UnsupportedCodecError(f"{quoted(name)} uses a video codec this FFmpeg build cannot decode; "
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
            f"{quoted(name)} could not be opened as a video ({exc.strerror or exc}); it is damaged, cut short "
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
            f"{quoted(name)} lasts {info.duration_s:.1f} s, over the {limits.max_duration_s:g}-second limit; "
            "cut it into shorter clips or raise MAX_VIDEO_SECONDS.", key=name, duration_s=round(info.duration_s, 3))


def _too_many_pixels(name: str, width: int, height: int, max_pixels: int, *, where: str = "") -> VideoTooLargeError:
    return VideoTooLargeError(
        f"{quoted(name)} has {width}x{height} = {width * height:,}-pixel frames{where}, over the {max_pixels:,}-pixel "
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
            f"{quoted(name)} has {frames:,} frames{rate}, over the {limit:,}-frame limit; cut it into shorter "
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
                f"{quoted(self._name)} holds more than {self._max_frames:,} frames, the decoded-frame limit; cut "
                "it into shorter clips, lower its frame rate or raise MAX_VIDEO_DECODED_FRAMES.", key=self._name,
                frames_decoded=self.decoded)
        if self._max_pixels is not None and frame.width * frame.height > self._max_pixels:
            raise _too_many_pixels(self._name, frame.width, frame.height, self._max_pixels,
                                   where=f" from frame {self.decoded}")
        item = DecodedFrame(self.decoded, self._time_of(frame), frame, self._convert,
                            nbytes=frame_bytes(frame.width, frame.height))
        if item.time_s > self._max_duration_s:  # the header under-declared the duration
            raise VideoTooLongError(
                f"{quoted(self._name)} runs past {self._max_duration_s:g} s, the duration limit; cut it into "
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



def frame_bytes(width: int, height: int) -> int:
    """A waiting frame's memory: yuv420p as decoded plus its RGB copy."""
    return max(1, width * height * 9 // 2)


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
