"""Bytes to RGB uint8 at the backbone's input size: the one decoder for training and serving.

Changing anything that alters output pixels must bump ``DECODER_VERSION``: the feature
cache and the bundle manifest are keyed on it.

Memory.  A frame is checked twice before its pixels are decoded: its declared pixels
against ``MAX_IMAGE_PIXELS`` and its estimated decode peak (:func:`estimate_decode_bytes`:
the pixels in Pillow's own mode, the decoder's buffers, the working strips) against
``MAX_DECODE_MB`` and the caller's :class:`~shared.budget.DecodeBudget`.  The decoded
image is then never copied whole: it is converted to RGB, turned upright (EXIF) and
resized across in strips of about a megapixel, and only the strip results (input-size
wide) are kept.  Every step is per pixel or per row, so the output is pixel for pixel
what converting and resizing the whole image gives (DECODER_VERSION 1), except for
frames with a side over ``MAX_SIDE`` pixels: those are box-averaged to that first, as
the full-size path would need gigabytes for them.  So the peak is the decoded image in
its own mode (at most 4 bytes a pixel: 200 MB at 50 MP) plus about 30 MB.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import math
import sys
from collections.abc import Iterator

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from shared.budget import DecodeBudget
from shared.config import DecodeLimits
from shared.errors import (
    DecompressionBombError,
    ImageTooLargeError,
    ImageTooLargeToDecodeError,
    InvalidImageError,
    NotAnImageError,
    TruncatedImageError,
)

DECODER_VERSION = "1"
# One filter for every resize, in training and serving alike.
RESIZE_FILTER = Image.Resampling.BILINEAR
_ROTATING_ORIENTATIONS = {5, 6, 7, 8}
_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}
_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
              5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}
# Bytes a pixel takes in Pillow's memory, by mode (everything else, RGB included, takes 4).
_PIXEL_BYTES = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2}
# Pixels converted and resized at a time.
STRIP_PIXELS = 1 << 20
# Sides longer than this are box-averaged down to it, strip by strip, before the resize.
MAX_SIDE = 32768
# Strips, their conversions and the resize's own buffers: bytes a pixel of a strip.
_WORKING_BYTES_PER_STRIP_PIXEL = 40
# What libwebp and Pillow hold besides the image itself: the decoder's canvas, its previous
# frame and the bytes handed to Pillow, 4 bytes a pixel each (measured: 16 bytes a pixel).
_WEBP_EXTRA_PER_PIXEL = 12
MIB = 1024 * 1024
_DEFAULT_LIMITS = DecodeLimits()
# glibc: allocations from this size up are mmapped, so freeing them returns them to the OS.
MMAP_THRESHOLD = MIB
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number
_mmap_fixed = False
_pixel_limit_owned = False  # see _own_the_pixel_limit


def decode_image(data: bytes, size: tuple[int, int], *, limits: DecodeLimits = _DEFAULT_LIMITS,
                 key: str | None = None, budget: DecodeBudget | None = None) -> np.ndarray:
    """Decode ``data`` to an ``(height, width, 3)`` uint8 RGB array of ``size`` = (width, height).

    The frame is squashed to ``size`` rather than cropped, so a vehicle at the edge of a
    CCTV frame is never cut off.  Raises an ``InvalidImageError`` subclass naming ``key``.
    ``budget``, shared by the threads decoding one event, bounds their decoded bytes at once.
    """
    if len(data) > limits.max_bytes:
        raise ImageTooLargeError(
            f"{_name(key)} is {len(data):,} bytes, over the {limits.max_bytes:,}-byte limit; "
            "send a smaller frame or raise MAX_IMAGE_BYTES.", key=key, size=len(data))
    if not data:
        raise NotAnImageError(f"{_name(key)} is empty (0 bytes); upload the frame again.", key=key)
    _mmap_large_allocations()
    img = _open(data, limits, key)
    try:
        full_size = img.size
        if img.format == "JPEG":
            # Draft mode lets libjpeg decode at 1/2, 1/4 or 1/8 scale (never below the
            # target), which makes a 12 MP frame several times cheaper to decode.  (Only a
            # JPEG's EXIF is read here: a PNG's getexif() decodes the whole image to reach an
            # eXIf chunk after the pixels, which must wait for the budget; see _upright_...)
            rotated = _orientation(img) in _ROTATING_ORIENTATIONS
            img.draft("RGB", (size[1], size[0]) if rotated else size)
        needed = estimate_decode_bytes(img, size, full_size=full_size)
        _refuse_over_limit(needed, limits, key, img)
        with budget.hold(needed, key=key) if budget is not None else contextlib.nullcontext():
            return _decode(img, size, key, len(data))
    finally:
        img.close()


def _mmap_large_allocations() -> None:
    """Fix glibc's mmap threshold (once per process) so decoded images go back to the OS when freed.

    By default glibc raises the threshold to the largest block freed so far (Pillow's are
    16 MB), after which image blocks come from per-thread heaps that keep what is freed:
    ten threads decoding one 50 MP 16-bit PNG each, one at a time under the decode budget,
    still left the process at 1.1 GB; with the threshold fixed it peaked at 180 MB.
    """
    global _mmap_fixed
    if _mmap_fixed:
        return
    _mmap_fixed = True
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def estimate_decode_bytes(img: Image.Image, size: tuple[int, int], *,
                          full_size: tuple[int, int] | None = None) -> int:
    """The most bytes :func:`decode_image` will hold for ``img``, from its header alone.

    ``img.size`` is the size it decodes at (after a JPEG draft); ``full_size`` the size
    the file declares, which progressive JPEGs buffer coefficients for.
    """
    width, height = img.size
    pixels = width * height
    working = min(pixels, STRIP_PIXELS) * _WORKING_BYTES_PER_STRIP_PIXEL + MIB
    total = pixels * _PIXEL_BYTES.get(img.mode, 4) + working + _decoder_extra(img, full_size or img.size)
    # The resized-across strips, stacked: input width by the (possibly box-reduced) height.
    total += 4 * size[0] * min(max(width, height), MAX_SIDE)
    return total


def _decoder_extra(img: Image.Image, full_size: tuple[int, int]) -> int:
    """What the format's decoder holds besides the decoded image."""
    width, height = img.size
    if img.format == "WEBP":
        return width * height * _WEBP_EXTRA_PER_PIXEL
    if img.format == "JPEG" and ("progressive" in img.info or "progression" in img.info):
        # libjpeg keeps every DCT coefficient (2 bytes) of the whole frame, at full size
        # whatever the draft scale, for each component at its own sampling.
        layers = getattr(img, "layer", None) or [("", 1, 1, 0)] * 3
        h_max = max(int(layer[1]) for layer in layers)
        v_max = max(int(layer[2]) for layer in layers)
        area = full_size[0] * full_size[1]
        return int(sum(2 * area * int(layer[1]) * int(layer[2]) / (h_max * v_max) for layer in layers))
    if img.format == "TIFF":
        # libtiff decodes a strip or tile at a time into a buffer of its own (one strip can
        # be the whole image).
        tags = getattr(img, "tag_v2", {})
        rows = int(tags.get(323) or tags.get(278) or height)  # TileLength, else RowsPerStrip
        cols = int(tags.get(322) or width)  # TileWidth
        return min(rows, height) * min(cols, width) * 8
    if img.format == "BMP":
        return width * height  # the RLE decoder's own buffer
    return 0


def _refuse_over_limit(needed: int, limits: DecodeLimits, key: str | None, img: Image.Image) -> None:
    if needed <= limits.max_decode_bytes:
        return
    width, height = img.size
    raise ImageTooLargeToDecodeError(
        f"{_name(key)} ({img.format} {img.mode}, {width}x{height} as decoded) needs about {needed / MIB:,.0f} MiB "
        f"to decode, over the {limits.max_decode_bytes / MIB:,.0f} MiB a frame may use; send it smaller (or as a "
        "baseline JPEG or a PNG, which decode leaner), or raise MAX_DECODE_MB if the function has the memory.",
        key=key, decode_bytes=needed, limit=limits.max_decode_bytes, width=width, height=height)


def _decode(img: Image.Image, size: tuple[int, int], key: str | None, nbytes: int) -> np.ndarray:
    try:
        img.load()
        return fit_to_input(_upright_rgb_resized_across(img, size), size)
    except OSError as exc:
        if "truncated" in str(exc).lower():
            raise TruncatedImageError(
                f"{_name(key)} is truncated ({exc}); the upload was probably cut short, send it again.",
                key=key) from None
        raise InvalidImageError(f"{_name(key)} could not be decoded ({exc}); {_advice(nbytes)}", key=key) from None
    except (ValueError, SyntaxError, EOFError) as exc:
        raise InvalidImageError(f"{_name(key)} could not be decoded ({exc}); {_advice(nbytes)}", key=key) from None


def _advice(nbytes: int) -> str:
    if nbytes < 1024:
        return (f"at {nbytes:,} bytes it is a stub, not a frame (a camera that wrote a placeholder, or an upload "
                "cut short), so check the camera's uploads and send the frame again.")
    return "the file is damaged; send the frame again, and check the camera if this repeats."


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


def _orientation(img: Image.Image) -> int:
    try:
        value = img.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - a damaged EXIF block must not sink a readable frame
        return 1
    return value if value in _TRANSPOSE else 1


def _own_the_pixel_limit() -> None:
    """Switch Pillow's own pixel limit off, once per process, so ``MAX_IMAGE_PIXELS`` decides.

    Pillow refuses more than 178,956,970 pixels (an error at twice that) in ``Image.open``,
    reading the module global ``Image.MAX_IMAGE_PIXELS`` at call time, so honouring a larger
    ``MAX_IMAGE_PIXELS`` needs that global off.  It is process-wide on purpose, and set once
    (on the first decode, not on import, so importing this module changes nothing): scoping
    it to each ``Image.open`` would race between the decoding threads.  Every frame this
    module opens is checked against ``MAX_IMAGE_PIXELS`` in :func:`_open` instead.  Code that
    sets Pillow's limit after that keeps its own value.
    """
    global _pixel_limit_owned
    if _pixel_limit_owned:
        return
    _pixel_limit_owned = True
    Image.MAX_IMAGE_PIXELS = None


def _open(data: bytes, limits: DecodeLimits, key: str | None) -> Image.Image:
    _own_the_pixel_limit()  # the check below is the one that decides (see there)
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise NotAnImageError(
            f"{_name(key)} is not an image Pillow can read (JPEG, PNG, WebP, BMP, TIFF, GIF); "
            "check that the camera uploads image files.", key=key) from None
    except (OSError, ValueError, SyntaxError) as exc:
        if "truncated" in str(exc).lower():
            raise TruncatedImageError(
                f"{_name(key)} ends before its image data ({exc}); {_advice(len(data))}", key=key,
                size=len(data)) from None
        raise InvalidImageError(f"{_name(key)} could not be opened as an image ({exc}); {_advice(len(data))}",
                                key=key) from None
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


# -- strip-wise conversion -------------------------------------------------------------


def _upright_rgb_resized_across(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """The frame upright (EXIF), in RGB, resized to ``size[0]`` across, built strip by strip.

    Equal to ``_to_rgb(exif_transpose(img)).resize((size[0], height))`` (the horizontal
    pass of Pillow's two-pass resize), without a full-size copy.  The caller's final resize
    is then the vertical pass alone.
    """
    orientation = _orientation(img)
    width, height = img.size
    if orientation in _ROTATING_ORIENTATIONS:
        width, height = height, width
    if width * height <= STRIP_PIXELS:  # small: the plain way costs no more
        upright = ImageOps.exif_transpose(img) or img
        return _to_rgb(upright)
    fx, fy = math.ceil(width / MAX_SIDE), math.ceil(height / MAX_SIDE)
    rows = max(fy, STRIP_PIXELS // min(width, STRIP_PIXELS) // fy * fy)
    cols = max(fx, min(width, STRIP_PIXELS) // fx * fx)
    across = Image.new("RGB", (size[0], math.ceil(height / fy)))
    for top in range(0, height, rows):
        bottom = min(height, top + rows)
        band = Image.new("RGB", (math.ceil(width / fx), math.ceil((bottom - top) / fy)))
        for left, right in _spans(width, cols):
            tile = _to_rgb(_upright_tile(img, orientation, (left, top, right, bottom)))
            if fx > 1 or fy > 1:
                tile = tile.reduce((fx, fy))
            band.paste(tile, (left // fx, 0))
        across.paste(band.resize((size[0], band.height), RESIZE_FILTER), (0, top // fy))
    return across


def _spans(length: int, step: int) -> Iterator[tuple[int, int]]:
    for start in range(0, length, step):
        yield start, min(length, start + step)


def _upright_tile(img: Image.Image, orientation: int, box: tuple[int, int, int, int]) -> Image.Image:
    """The part ``box`` (left, top, right, bottom, in upright coordinates) of ``img`` made upright."""
    c0, r0, c1, r1 = box
    w, h = img.size
    source = {
        1: (c0, r0, c1, r1), 2: (w - c1, r0, w - c0, r1), 3: (w - c1, h - r1, w - c0, h - r0),
        4: (c0, h - r1, c1, h - r0), 5: (r0, c0, r1, c1), 6: (r0, h - c1, r1, h - c0),
        7: (w - r1, h - c1, w - r0, h - c0), 8: (w - r1, c0, w - r0, c1),
    }[orientation]
    tile = img.crop(source)
    return tile.transpose(_TRANSPOSE[orientation]) if orientation != 1 else tile


def _to_rgb(img: Image.Image) -> Image.Image:
    """One tile (or a small frame) to RGB; every step is per pixel."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in _SIXTEEN_BIT_MODES:
        # Pillow's own I;16 -> L conversion clips at 255; scale the 16-bit range instead,
        # in place in the tile's own integer type (never int64).
        wide = np.array(img)
        np.floor_divide(wide, 257, out=wide)
        np.clip(wide, 0, 255, out=wide)
        return Image.fromarray(wide.astype(np.uint8)).convert("RGB")
    if mode == "F":
        values = np.array(img, dtype=np.float32)
        np.clip(values, 0, 255, out=values)
        return Image.fromarray(values.astype(np.uint8)).convert("RGB")
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
