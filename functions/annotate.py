"""Drawing the prediction onto video frames, and writing them as an H.264 mp4.

The overlay is sized from the frame height, so the label stays readable on a 240-line
camera and on a 1080p one alike.  PyAV is imported only when a writer is opened.
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from shared.decision import decide
from shared.imaging import RESIZE_FILTER

# Label text, bar fill above and below the threshold, and the box behind them.
TEXT = (255, 255, 255)
MUTED = (200, 200, 200)
HOT = (255, 140, 0)
COLD = (80, 160, 255)
BOX = (0, 0, 0)
TRACK = (70, 70, 70)
# x264 settings: "veryfast" costs ~5 ms of CPU per 640x360 frame here (ultrafast ~3 ms, but
# files 4x larger); CRF 23 is x264's default quality; yuv420p is what browsers can play.
X264_OPTIONS = {"preset": "veryfast", "crf": "23"}
PIXEL_FORMAT = "yuv420p"
# Labels x 101 percentages x bar widths: a few hundred badges cover nearly every clip.
BADGE_CACHE = 1024
# The bar's class against everything else, as a binary head for shared.decision.
_BAR_CLASSES = ("rest", "bar")


@dataclasses.dataclass(frozen=True)
class Overlay:
    """Fonts and sizes for one frame size; build once per clip with :meth:`for_height`."""

    font: Any
    small: Any
    margin: int
    pad: int
    bar_width: int
    bar_height: int

    @classmethod
    def for_height(cls, height: int, width: int | None = None) -> Overlay:
        # About 18 text lines per frame height: ~13 px on 240-line cameras, 60 px on 1080p.
        size = max(12, round(height / 18))
        width = width or height * 4 // 3
        return cls(font=ImageFont.load_default(size=size), small=ImageFont.load_default(size=max(10, size * 2 // 3)),
                   margin=max(2, size // 3), pad=max(2, size // 4),
                   bar_width=max(40, min(width // 4, size * 7)), bar_height=max(4, size // 3))


@dataclasses.dataclass(frozen=True)
class Badge:
    """What the overlay shows, rounded to what can be seen: equal badges draw identically."""

    label: str
    percent: int
    bar_name: str | None
    bar_px: int | None  # filled width of the bar in pixels; None draws no bar
    bar_hot: bool

    @classmethod
    def of(cls, overlay: Overlay, *, label: str, probability: float, bar_value: float | None,
           bar_name: str | None, threshold: float | None) -> Badge:
        bar_px = None if bar_value is None else round(overlay.bar_width * min(max(bar_value, 0.0), 1.0))
        return cls(label, round(100 * probability), bar_name, bar_px, bar_is_hot(bar_value, threshold))


def bar_is_hot(bar_value: float | None, threshold: float | None) -> bool:
    """Whether the bar's class wins, by the project's one labelling rule (``shared.decision``).

    The bar's class is scored against the rest (``1 - bar_value``) at the head's threshold, or
    at even odds when the head has none (a multi-class head's top class): for a binary head
    the bar turns hot exactly where the function's label becomes the positive class.
    """
    if bar_value is None:
        return False
    probs = np.array([1.0 - bar_value, bar_value])
    return decide(probs, _BAR_CLASSES, _BAR_CLASSES[1], 0.5 if threshold is None else threshold) == 1


def render_badge(overlay: Overlay, badge: Badge, threshold: float | None) -> Image.Image:
    """The label, probability and bar on a black box, as a small image to paste on frames."""
    headline = f"{badge.label} {badge.percent}%"
    caption = f"P({badge.bar_name})" if badge.bar_name and badge.bar_px is not None else ""
    pad, probe = overlay.pad, ImageDraw.Draw(Image.new("RGB", (1, 1)))
    # Whole pixels: textbbox is typed as float (it can be, for fractional anchors; not here).
    head = tuple(int(v) for v in probe.textbbox((0, 0), headline, font=overlay.font))
    cap = tuple(int(v) for v in probe.textbbox((0, 0), caption, font=overlay.small)) if caption else (0, 0, 0, 0)
    bar_row = max(overlay.bar_height, cap[3]) if badge.bar_px is not None else 0
    width = max(head[2], (cap[2] + pad if caption else 0) + (overlay.bar_width if bar_row else 0)) + 2 * pad
    height = head[3] + (pad + bar_row if bar_row else 0) + 2 * pad
    img = Image.new("RGB", (width + 1, height + 1), BOX)
    draw = ImageDraw.Draw(img)
    draw.text((pad, pad), headline, font=overlay.font, fill=TEXT)
    if bar_row:
        top = pad + head[3] + pad
        if caption:
            draw.text((pad, top), caption, font=overlay.small, fill=MUTED)
        x0 = pad + (cap[2] + pad if caption else 0)
        _bar(draw, (x0, top + (bar_row - overlay.bar_height) // 2), overlay, badge, threshold)
    return img


def draw_overlay(img: Image.Image, overlay: Overlay, *, label: str, probability: float,
                 bar_value: float | None, bar_name: str | None, threshold: float | None) -> Image.Image:
    """Draw ``label probability`` and a bar of ``bar_value`` in the top-left corner, in place."""
    badge = Badge.of(overlay, label=label, probability=probability, bar_value=bar_value, bar_name=bar_name,
                     threshold=threshold)
    img.paste(render_badge(overlay, badge, threshold), (overlay.margin, overlay.margin))
    return img


def _bar(draw: ImageDraw.ImageDraw, at: tuple[int, int], overlay: Overlay, badge: Badge,
         threshold: float | None) -> None:
    x0, y0 = at
    x1, y1 = x0 + overlay.bar_width, y0 + overlay.bar_height
    draw.rectangle([x0, y0, x1, y1], fill=TRACK)
    if badge.bar_px:
        draw.rectangle([x0, y0, x0 + badge.bar_px, y1], fill=HOT if badge.bar_hot else COLD)
    if threshold is not None:  # a tick at the decision threshold
        tx = x0 + round(overlay.bar_width * threshold)
        draw.line([tx, max(0, y0 - 2), tx, y1 + 2], fill=TEXT, width=max(1, overlay.bar_height // 4))


def even_size(width: int, height: int) -> tuple[int, int]:
    """yuv420p halves the chroma planes, so x264 needs even dimensions."""
    return width + width % 2, height + height % 2


def pad_to_even(img: Image.Image) -> Image.Image:
    size = even_size(*img.size)
    if size == img.size:
        return img
    padded = Image.new("RGB", size, BOX)  # one black row/column rather than losing a pixel of scene
    padded.paste(img, (0, 0))
    return padded


class AnnotatedWriter:
    """Write annotated frames to an H.264 mp4 at the source frame rate.

    The container is opened on the first frame, so its size is the frame's real size.
    ``close`` flushes the encoder; ``abort`` closes and deletes a half-written file.
    """

    def __init__(self, path: Path, fps: Fraction, *, bar_name: str | None, threshold: float | None) -> None:
        self.path = path
        self.fps = fps
        self.bar_name = bar_name
        self.threshold = threshold
        self.frames = 0
        self.size: tuple[int, int] | None = None
        self._container: Any = None
        self._stream: Any = None
        self._created = False
        self._overlay: Overlay | None = None
        # Consecutive frames mostly show the same rounded values: render each badge once.
        self._badges: dict[Badge, Image.Image] = {}

    def _open(self, width: int, height: int) -> None:
        import av

        self._container = av.open(str(self.path), mode="w", format="mp4",
                                  options={"movflags": "+faststart"})  # playable while still downloading
        self._created = True
        stream = self._container.add_stream("libx264", rate=self.fps, options=dict(X264_OPTIONS))
        stream.width, stream.height = even_size(width, height)
        stream.pix_fmt = PIXEL_FORMAT
        self._stream = stream
        self.size = (width, height)
        self._overlay = Overlay.for_height(height, width)

    def write(self, image: Image.Image, *, label: str, probability: float, bar_value: float | None) -> None:
        """Annotate ``image`` (an RGB frame at source size, drawn on in place) and encode it."""
        import av

        if self._container is None:
            self._open(*image.size)
        assert self._overlay is not None and self.size is not None
        if image.size != self.size:  # a mid-stream resolution change; x264 needs one size
            image = image.resize(self.size, RESIZE_FILTER)
        self._stamp(image, label=label, probability=probability, bar_value=bar_value)
        frame = av.VideoFrame.from_image(pad_to_even(image))  # type: ignore[no-untyped-call]  # PyAV leaves it untyped
        frame.pts = self.frames  # one tick of 1/fps per frame: the source rate, no drift
        frame.time_base = 1 / self.fps
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def _stamp(self, image: Image.Image, *, label: str, probability: float, bar_value: float | None) -> None:
        assert self._overlay is not None
        badge = Badge.of(self._overlay, label=label, probability=probability, bar_value=bar_value,
                         bar_name=self.bar_name or label, threshold=self.threshold)
        patch = self._badges.get(badge)
        if patch is None:
            if len(self._badges) >= BADGE_CACHE:
                self._badges.clear()
            patch = self._badges[badge] = render_badge(self._overlay, badge, self.threshold)
        image.paste(patch, (self._overlay.margin, self._overlay.margin))

    def describe(self) -> dict[str, Any]:
        width, height = even_size(*self.size) if self.size else (None, None)
        return {"codec": "h264", "pixel_format": PIXEL_FORMAT, "width": width, "height": height,
                "fps": round(float(self.fps), 3), "frames": self.frames}

    def close(self) -> None:
        if self._container is None:
            return
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
        finally:
            self._container.close()
            self._container = None

    def abort(self) -> None:
        """Close without flushing and delete the file: never leave a broken mp4 behind
        (but never delete a file this writer did not create)."""
        if self._container is not None:
            try:
                self._container.close()
            except Exception:  # noqa: BLE001 - the file is being thrown away anyway
                pass
            self._container = None
        if self._created:
            self.path.unlink(missing_ok=True)
