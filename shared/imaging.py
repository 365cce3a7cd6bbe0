"""Bytes to RGB uint8 at the backbone's input size: the one decoder for training and serving.

Changing anything that alters output pixels must bump ``DECODER_VERSION``: the feature
cache and the bundle manifest are keyed on it.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from shared.config import DecodeLimits
from shared.errors import (
    DecompressionBombError,
    ImageTooLargeError,
    InvalidImageError,
    NotAnImageError,
    TruncatedImageError,
)

DECODER_VERSION = "1"
# One filter for every resize, in training and serving alike.
RESIZE_FILTER = Image.Resampling.BILINEAR
_ROTATING_ORIENTATIONS = {5, 6, 7, 8}
_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}


def decode_image(data: bytes, size: tuple[int, int], *, limits: DecodeLimits = DecodeLimits(),
                 key: str | None = None) -> np.ndarray:
    """Decode ``data`` to an ``(height, width, 3)`` uint8 RGB array of ``size`` = (width, height).

    The frame is squashed to ``size`` rather than cropped, so a vehicle at the edge of a
    CCTV frame is never cut off.  Raises an ``InvalidImageError`` subclass naming ``key``.
    """
    if len(data) > limits.max_bytes:
        raise ImageTooLargeError(
            f"{_name(key)} is {len(data):,} bytes, over the {limits.max_bytes:,}-byte limit; "
            "send a smaller frame or raise MAX_IMAGE_BYTES.", key=key, size=len(data))
    if not data:
        raise NotAnImageError(f"{_name(key)} is empty (0 bytes); upload the frame again.", key=key)
    img = _open(data, limits, key)
    try:
        rgb = _load_rgb(img, size, key)
    finally:
        img.close()
    return fit_to_input(rgb, size)


def fit_to_input(img: Image.Image, size: tuple[int, int]) -> np.ndarray:
    """RGB uint8 ``(height, width, 3)`` at ``size`` = (width, height): squashed, never cropped.

    The last step of :func:`decode_image`, and what video mode does to each sampled frame
    of a clip: one resize filter for both.  They are not bit-identical for a JPEG still,
    whose DCT draft downscale happens before this step (up to 16 grey levels apart on a
    1080p frame, 0.5 on average); clip frames arrive decoded at full size.  An image that
    is not RGB yet is converted with Pillow's plain ``convert("RGB")`` (``decode_image``
    has already handled 16-bit and alpha modes).
    """
    if img.mode != "RGB":
        img = img.convert("RGB")
    if img.size != size:
        img = img.resize(size, RESIZE_FILTER)
    return np.asarray(img, dtype=np.uint8)


def _name(key: str | None) -> str:
    return repr(key) if key else "The image"


def _open(data: bytes, limits: DecodeLimits, key: str | None) -> Image.Image:
    try:
        # Pillow only warns between its own limit and twice that; our pixel check below
        # is the one that decides, so MAX_IMAGE_PIXELS is honoured either way.
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise NotAnImageError(
            f"{_name(key)} is not an image Pillow can read (JPEG, PNG, WebP, BMP, TIFF, GIF); "
            "check that the camera uploads image files.", key=key) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DecompressionBombError(f"{_name(key)} declares too many pixels ({exc}); it was refused.",
                                     key=key) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise InvalidImageError(f"{_name(key)} could not be opened as an image ({exc}).", key=key) from None
    width, height = img.size
    if width * height > limits.max_pixels:
        img.close()
        raise DecompressionBombError(
            f"{_name(key)} declares {width}x{height} = {width * height:,} pixels, over the "
            f"{limits.max_pixels:,}-pixel limit (a possible decompression bomb); raise MAX_IMAGE_PIXELS "
            "if such frames are genuine.", key=key, width=width, height=height)
    if width == 0 or height == 0:
        img.close()
        raise NotAnImageError(f"{_name(key)} has no pixels ({width}x{height}).", key=key)
    return img


def _load_rgb(img: Image.Image, size: tuple[int, int], key: str | None) -> Image.Image:
    try:
        orientation = img.getexif().get(0x0112, 1) if hasattr(img, "getexif") else 1
        if img.format == "JPEG":
            # Draft mode lets libjpeg decode at 1/2, 1/4 or 1/8 scale (never below the
            # target), which makes a 12 MP frame several times cheaper to decode.
            want = (size[1], size[0]) if orientation in _ROTATING_ORIENTATIONS else size
            img.draft("RGB", want)
        img.load()
        img = ImageOps.exif_transpose(img) or img
        return _to_rgb(img)
    except OSError as exc:
        if "truncated" in str(exc).lower():
            raise TruncatedImageError(
                f"{_name(key)} is truncated ({exc}); the upload was probably cut short, send it again.",
                key=key) from None
        raise InvalidImageError(f"{_name(key)} could not be decoded ({exc}).", key=key) from None
    except (ValueError, SyntaxError, EOFError) as exc:
        raise InvalidImageError(f"{_name(key)} could not be decoded ({exc}).", key=key) from None


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in _SIXTEEN_BIT_MODES:
        # Pillow's own I;16 -> L conversion clips at 255; scale the 16-bit range instead.
        wide = np.asarray(img, dtype=np.int64)
        grey = np.clip(wide // 257, 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if mode == "F":
        grey = np.clip(np.asarray(img, dtype=np.float64), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if mode == "P":
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in {"RGBA", "LA", "PA", "RGBa", "La"}:
        # Transparent areas carry no scene content: flatten them onto one fixed colour
        # so that whatever pixels hide under alpha=0 cannot change the prediction.
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")
