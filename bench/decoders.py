"""The shipped decoder and a full-decode reference, for benchmarks 2 and 5.

``shipped`` is ``shared.imaging.decode_image`` (JPEG draft mode: libjpeg decodes at 1/2,
1/4 or 1/8 scale, never below the target).  ``full`` does the same steps without draft
mode: decode every pixel, then resize.  Both give (H, W, 3) uint8.
"""

from __future__ import annotations

import io

import numpy as np


def shipped(data: bytes, size: tuple[int, int]) -> np.ndarray:
    from shared.imaging import decode_image

    return decode_image(data, size)


def full(data: bytes, size: tuple[int, int]) -> np.ndarray:
    from PIL import Image, ImageOps

    from shared.imaging import RESIZE_FILTER

    with Image.open(io.BytesIO(data)) as img:
        img.load()
        rgb = (ImageOps.exif_transpose(img) or img).convert("RGB")
    if rgb.size != size:
        rgb = rgb.resize(size, RESIZE_FILTER)
    return np.asarray(rgb, dtype=np.uint8)


def draft_scale(data: bytes, size: tuple[int, int]) -> str:
    """What draft mode decodes the JPEG at, e.g. ``3872x2592 -> 484x324 (1/8)``."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        before = img.size
        img.draft("RGB", size)
        after = img.size
    return f"{before[0]}x{before[1]} -> {after[0]}x{after[1]} (1/{before[0] // max(1, after[0])})"
