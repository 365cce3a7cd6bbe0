"""Synthetic CCTV-like frames for the demo and the tests.

A grey road seen from a pole camera (lanes, kerb, verge), one vehicle of random
colour, size and position, sensor noise, and JPEG compression.  Labels:
``bus`` (long box, a row of windows, several wheels), ``car`` (short body and cabin)
and ``empty`` (the road alone).  Deterministic for a given seed.
"""

from __future__ import annotations

import argparse
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

LABELS = ("bus", "car", "empty")


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    r, g, b = (int(c) for c in rng.integers(20, 236, size=3))
    return r, g, b


def _road(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    tone = int(rng.integers(70, 130))
    img = Image.new("RGB", (width, height), (tone, tone, tone + int(rng.integers(-8, 9))))
    draw = ImageDraw.Draw(img)
    verge = int(height * rng.uniform(0.08, 0.2))
    draw.rectangle([0, 0, width, verge], fill=(int(rng.integers(40, 90)), int(rng.integers(90, 140)), 50))
    for lane_y in np.linspace(verge + height * 0.25, height * 0.9, 2):
        for x in range(int(rng.integers(0, 30)), width, 60):
            draw.rectangle([x, lane_y - 2, x + 30, lane_y + 2], fill=(230, 230, 210))
    return img


def _wheels(draw: ImageDraw.ImageDraw, xs: list[float], y: float, r: float) -> None:
    for x in xs:
        draw.ellipse([x - r, y - r, x + r, y + r], fill=(20, 20, 20))


def _bus(draw: ImageDraw.ImageDraw, rng: np.random.Generator, width: int, height: int) -> None:
    w = width * rng.uniform(0.45, 0.8)
    h = w * rng.uniform(0.28, 0.38)
    x0 = rng.uniform(0, width - w)
    y0 = rng.uniform(height * 0.25, height - h - 8)
    draw.rectangle([x0, y0, x0 + w, y0 + h], fill=_colour(rng), outline=(30, 30, 30))
    n = int(rng.integers(5, 9))
    pane = w / (n + 1)
    for i in range(n):
        wx = x0 + pane * (i + 0.5)
        draw.rectangle([wx, y0 + h * 0.12, wx + pane * 0.8, y0 + h * 0.45], fill=(150, 190, 215))
    _wheels(draw, [x0 + w * 0.15, x0 + w * 0.3, x0 + w * 0.82], y0 + h, h * 0.12)


def _car(draw: ImageDraw.ImageDraw, rng: np.random.Generator, width: int, height: int) -> None:
    w = width * rng.uniform(0.15, 0.3)
    h = w * rng.uniform(0.28, 0.36)
    x0 = rng.uniform(0, width - w)
    y0 = rng.uniform(height * 0.35, height - h - 6)
    colour = _colour(rng)
    draw.rounded_rectangle([x0, y0, x0 + w, y0 + h], radius=h * 0.3, fill=colour)
    draw.polygon([(x0 + w * 0.22, y0), (x0 + w * 0.35, y0 - h * 0.6), (x0 + w * 0.7, y0 - h * 0.6),
                  (x0 + w * 0.82, y0)], fill=colour)
    draw.polygon([(x0 + w * 0.3, y0), (x0 + w * 0.38, y0 - h * 0.48), (x0 + w * 0.66, y0 - h * 0.48),
                  (x0 + w * 0.74, y0)], fill=(150, 190, 215))
    _wheels(draw, [x0 + w * 0.2, x0 + w * 0.8], y0 + h, h * 0.28)


def render(label: str, rng: np.random.Generator, size: tuple[int, int] = (320, 240)) -> Image.Image:
    """One synthetic frame of ``label`` as an RGB image."""
    if label not in LABELS:
        raise ValueError(f"unknown synthetic label {label!r}; choose from {LABELS}")
    width, height = size
    img = _road(rng, width, height)
    draw = ImageDraw.Draw(img)
    if label == "bus":
        _bus(draw, rng, width, height)
    elif label == "car":
        _car(draw, rng, width, height)
    img = img.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.3, 1.0))))
    noise = rng.normal(0, rng.uniform(3, 9), size=(height, width, 3))
    return Image.fromarray(np.clip(np.asarray(img, dtype=np.float32) + noise, 0, 255).astype(np.uint8))


def jpeg_bytes(img: Image.Image, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def generate(labels: tuple[str, ...] | list[str], per_label: int, *, seed: int = 0,
             size: tuple[int, int] = (320, 240)) -> Iterator[tuple[str, str, bytes]]:
    """Yield ``(label, filename, jpeg bytes)``; the same seed gives the same bytes."""
    for li, label in enumerate(labels):
        rng = np.random.default_rng([seed, li])
        for i in range(per_label):
            quality = int(rng.integers(70, 95))
            yield label, f"cam{i % 4}_{i:05d}.jpg", jpeg_bytes(render(label, rng, size), quality)


def clip_bytes(labels: tuple[str, ...] | list[str], *, seconds_each: float = 1.0, fps: int = 10,
               size: tuple[int, int] = (160, 120), seed: int = 0) -> bytes:
    """A short H.264 mp4: one static shot per label, ``seconds_each`` long, with fresh sensor
    noise in every frame (as a real camera has).  PyAV is imported here only."""
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=fps, options={"preset": "ultrafast"})
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        for li, label in enumerate(labels):
            shot = np.asarray(render(label, np.random.default_rng([seed, li]), size), dtype=np.float32)
            noise = np.random.default_rng([seed, li, 1])
            for _ in range(round(seconds_each * fps)):
                pixels = np.clip(shot + noise.normal(0, 3, shot.shape), 0, 255).astype(np.uint8)
                out.mux(stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")))
        out.mux(stream.encode(None))
    return buf.getvalue()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write synthetic CCTV-like frames, one folder per label.")
    parser.add_argument("out", type=Path, help="output folder")
    parser.add_argument("--labels", default="bus,car", help="comma-separated labels (bus, car, empty)")
    parser.add_argument("--per-label", type=int, default=60, help="frames per label")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for label, name, data in generate(args.labels.split(","), args.per_label, seed=args.seed):
        (args.out / label).mkdir(parents=True, exist_ok=True)
        (args.out / label / name).write_bytes(data)


if __name__ == "__main__":
    main()
