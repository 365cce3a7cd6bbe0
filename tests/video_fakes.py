"""Small synthetic CCTV clips for the video tests, written with PyAV, plus broken ones.

Scenes are a road seen from a pole camera with one vehicle driving across.  The tiny
bundle of :mod:`tests.fakes` decides on mean redness, so the lighting carries the class:
``car`` scenes are lit warm (sodium lamps, a red car), ``bus`` scenes cool (a blue bus
under daylight).  That keeps its prediction for every frame certain without
pretending the tiny model recognises vehicles.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SIZE = (160, 120)
FPS = 10
# (road, verge, vehicle) colours per label.
PALETTE = {
    "bus": ((95, 105, 135), (60, 90, 120), (40, 70, 190)),
    "car": ((150, 95, 70), (130, 80, 50), (215, 40, 35)),
}


def scene(label: str, step: int, size: tuple[int, int] = SIZE) -> Image.Image:
    """Frame ``step`` of a vehicle of ``label`` driving left to right; deterministic."""
    road, verge, body = PALETTE[label]
    width, height = size
    img = Image.new("RGB", size, road)
    draw = ImageDraw.Draw(img)
    draw.rectangle([0, 0, width, height // 6], fill=verge)
    for x in range(-(step * 3) % 24 - 24, width, 24):  # lane dashes slide: the camera sees motion
        draw.rectangle([x, height * 2 // 3, x + 12, height * 2 // 3 + 2], fill=(225, 225, 205))
    long = label == "bus"
    w, h = (width * 0.55, height * 0.3) if long else (width * 0.3, height * 0.18)
    x0 = (step * width / 30) % (width + w) - w
    y0 = height * 0.35
    draw.rectangle([x0, y0, x0 + w, y0 + h], fill=body, outline=(20, 20, 20))
    panes = 6 if long else 2
    for i in range(panes):
        px = x0 + w * (i + 0.3) / panes
        draw.rectangle([px, y0 + h * 0.15, px + w * 0.6 / panes, y0 + h * 0.45], fill=(150, 190, 215))
    for wx in ((0.15, 0.3, 0.85) if long else (0.2, 0.8)):
        r = h * 0.15
        draw.ellipse([x0 + w * wx - r, y0 + h - r, x0 + w * wx + r, y0 + h + r], fill=(15, 15, 15))
    return img


def labels_switching(seconds: float = 4.0, fps: int = FPS, first: str = "bus", second: str = "car") -> list[str]:
    n = round(seconds * fps)
    return [first] * (n // 2) + [second] * (n - n // 2)


def _codec(path: Path) -> str:
    return "mpeg4" if path.suffix.lower() == ".avi" else "libx264"


def write_frames(path: Path, frames: Iterator[Image.Image] | Sequence[Image.Image], *, fps: int | Fraction = FPS,
                 codec: str | None = None, pix_fmt: str = "yuv420p", faststart: bool = True) -> Path:
    """Encode ``frames`` (all one size) into ``path``; mp4/mov/mkv get H.264, avi MPEG-4 Part 2.

    ``faststart`` puts the MP4 index first, as cameras that stream uploads do, so a
    truncated copy still decodes up to the cut.
    """
    import av

    codec = codec or _codec(path)
    options = {"movflags": "+faststart"} if faststart and path.suffix.lower() in (".mp4", ".mov") else {}
    frames = iter(frames)
    first = next(frames)
    with av.open(str(path), "w", options=options) as out:
        stream = out.add_stream(codec, rate=fps, options={"preset": "ultrafast"} if codec == "libx264" else {})
        assert isinstance(stream, av.VideoStream)  # a video codec name gives a video stream
        stream.width, stream.height = first.size
        stream.pix_fmt = pix_fmt
        for img in itertools.chain([first], frames):
            for packet in stream.encode(av.VideoFrame.from_image(img)):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def write_clip(path: Path, labels: Sequence[str], *, size: tuple[int, int] = SIZE, fps: int = FPS,
               faststart: bool = True) -> Path:
    """A clip with one frame per entry of ``labels``, the vehicle moving throughout."""
    return write_frames(path, (scene(label, i, size) for i, label in enumerate(labels)), fps=fps,
                        faststart=faststart)


def write_long_clip(path: Path, frames: int, *, size: tuple[int, int] = (320, 240), fps: int = 30) -> Path:
    """A longer clip (bus then car) for the memory test; frames are drawn one at a time."""
    half = frames // 2
    return write_frames(path, (scene("bus" if i < half else "car", i, size) for i in range(frames)), fps=fps)


def flat_clip(path: Path, size: tuple[int, int], frames: int = 1,
              colour: tuple[int, int, int] = (90, 100, 130)) -> Path:
    """Frames of one flat colour: the cheapest clip of a large frame size (4096x2304 is a few KB)."""
    img = Image.new("RGB", size, colour)
    return write_frames(path, [img] * frames)


# -- broken inputs ------------------------------------------------------------------------


def truncate(src: Path, dst: Path, fraction: float = 0.5) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[:int(len(data) * fraction)])
    return dst


def cut_after_index(src: Path, dst: Path) -> Path:
    """Keep a faststart MP4's header and index but none of its frame data."""
    data = src.read_bytes()
    mdat = data.find(b"mdat")
    assert 0 < data.find(b"moov") < mdat, "expected a faststart MP4 (index before the data)"
    dst.write_bytes(data[:mdat + 4 + 16])  # the box header and a few bytes of the first frame
    return dst


def zero_frame_avi(path: Path) -> Path:
    """An AVI with a video stream declared but not a single frame in it."""
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=FPS)
        stream.width, stream.height = SIZE
        stream.pix_fmt = "yuv420p"
        out.start_encoding()
    return path


def audio_only(path: Path, seconds: float = 1.0) -> Path:
    """An .mp4 holding AAC silence and no video, like a phone's voice memo renamed."""
    import av

    rate = 16_000
    with av.open(str(path), "w") as out:
        stream = out.add_stream("aac", rate=rate, layout="mono")
        for i in range(int(seconds * rate / 1024)):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), dtype=np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = rate, i * 1024
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def unknown_codec_avi(path: Path) -> Path:
    """An AVI whose video FourCC no FFmpeg decoder claims (an MPEG-4 clip relabelled)."""
    write_clip(path, ["bus"] * 5)
    data = path.read_bytes()
    assert data.count(b"FMP4") == 2, "the AVI muxer changed how it tags MPEG-4"
    path.write_bytes(data.replace(b"FMP4", b"QZQZ"))
    return path


def text_as_mp4(path: Path) -> Path:
    path.write_text("This is a shift report, not a video.\n" * 20, encoding="utf-8")
    return path


def garbage(path: Path, size: int = 20_000, seed: int = 0) -> Path:
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes())
    return path
