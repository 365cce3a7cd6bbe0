"""shared.imaging.decode_image: every mode and format, EXIF, draft mode, and every refusal.

Every image is built here with Pillow; none is read from disk.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageOps, JpegImagePlugin

from shared import imaging
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
from shared.imaging import RESIZE_FILTER, decode_image, estimate_decode_bytes

KEY = "incoming/cam-7/frame-0001.jpg"
WHITE = (255, 255, 255)


def encode(img: Image.Image, fmt: str, **params) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **params)
    return buf.getvalue()


def assert_sentence(exc: BaseException) -> None:
    message = str(exc)
    assert message.endswith("."), message
    assert message[0].isupper() or message[0] in "'\"", message


def assert_names_key(exc: InvalidImageError, key: str = KEY) -> None:
    assert exc.context["key"] == key
    assert key in str(exc)
    assert_sentence(exc)


def assert_uniform(arr: np.ndarray, size: tuple[int, int], colour: tuple[int, int, int], tol: int) -> None:
    width, height = size
    assert arr.shape == (height, width, 3)
    assert arr.dtype == np.uint8
    diff = np.abs(arr.astype(np.int16) - np.array(colour, dtype=np.int16))
    assert diff.max() <= tol, f"expected {colour} ± {tol}, got pixels from {arr.reshape(-1, 3).min(0)} " \
                              f"to {arr.reshape(-1, 3).max(0)}"


# -- every mode, at the requested size ------------------------------------------------

SRC = (16, 12)  # (width, height) of the source images
OUT = (7, 5)  # deliberately non-square, not a divisor of SRC


def _palette(mode_colour: tuple[int, int, int], hidden: tuple[int, int, int] = (0, 0, 0)) -> Image.Image:
    img = Image.new("P", SRC, 1)
    img.putpalette([*hidden, *mode_colour] + [0] * (256 - 2) * 3)
    return img


def _p_transparent(fmt: str) -> bytes:
    # Index 1 is (10, 200, 30) but marked transparent: it must come out white.
    return encode(_palette((10, 200, 30)), fmt, transparency=1)


def _i16(value: int) -> bytes:
    img = Image.fromarray(np.full(SRC[::-1], value, dtype=np.uint16))
    assert img.mode == "I;16"
    return encode(img, "PNG")


MODE_CASES: list = [
    pytest.param(lambda: encode(Image.new("RGB", SRC, (200, 30, 60)), "PNG"), (200, 30, 60), 0, id="RGB-png"),
    pytest.param(lambda: encode(Image.new("L", SRC, 100), "PNG"), (100, 100, 100), 0, id="L-png"),
    pytest.param(lambda: encode(Image.new("L", SRC, 100), "JPEG"), (100, 100, 100), 2, id="L-jpeg"),
    pytest.param(lambda: encode(Image.new("LA", SRC, (100, 255)), "PNG"), (100, 100, 100), 0, id="LA-opaque"),
    pytest.param(lambda: encode(Image.new("LA", SRC, (100, 0)), "PNG"), WHITE, 0, id="LA-transparent"),
    pytest.param(lambda: encode(_palette((10, 200, 30)), "PNG"), (10, 200, 30), 0, id="P-png"),
    pytest.param(lambda: encode(_palette((10, 200, 30)), "GIF"), (10, 200, 30), 0, id="P-gif"),
    pytest.param(lambda: _p_transparent("PNG"), WHITE, 0, id="P-transparency-png"),
    pytest.param(lambda: _p_transparent("GIF"), WHITE, 0, id="P-transparency-gif"),
    pytest.param(lambda: encode(Image.new("RGBA", SRC, (10, 20, 30, 255)), "PNG"), (10, 20, 30), 0,
                 id="RGBA-opaque"),
    pytest.param(lambda: encode(Image.new("RGBA", SRC, (10, 20, 30, 0)), "PNG"), WHITE, 0, id="RGBA-transparent"),
    pytest.param(lambda: encode(Image.new("RGBA", SRC, (10, 20, 30, 0)), "WEBP", lossless=True), WHITE, 0,
                 id="RGBA-transparent-webp"),
    # Pillow's CMYK -> RGB is R = 255 - C - K etc., so (0, 255, 255, 0) is pure red.
    pytest.param(lambda: encode(Image.new("CMYK", SRC, (0, 255, 255, 0)), "JPEG", quality=95), (255, 0, 0), 8,
                 id="CMYK-jpeg"),
    pytest.param(lambda: encode(Image.new("CMYK", SRC, (0, 255, 255, 0)), "TIFF"), (255, 0, 0), 0, id="CMYK-tiff"),
    pytest.param(lambda: _i16(65535), WHITE, 0, id="I16-max"),
    pytest.param(lambda: _i16(32768), (127, 127, 127), 0, id="I16-half"),
    pytest.param(lambda: encode(Image.new("1", SRC, 1), "PNG"), WHITE, 0, id="1-png-white"),
    pytest.param(lambda: encode(Image.new("1", SRC, 0), "BMP"), (0, 0, 0), 0, id="1-bmp-black"),
    pytest.param(lambda: encode(Image.new("1", SRC, 1), "TIFF"), WHITE, 0, id="1-tiff-white"),
]


@pytest.mark.parametrize(("build", "colour", "tol"), MODE_CASES)
def test_every_mode_decodes_to_rgb_uint8_at_the_requested_size(
        build: Callable[[], bytes], colour: tuple[int, int, int], tol: int) -> None:
    arr = decode_image(build(), OUT, key=KEY)
    assert_uniform(arr, OUT, colour, tol)


def test_the_source_modes_are_really_the_ones_under_test() -> None:
    # Guards the table above against Pillow silently changing what it opens.
    opened = {
        "LA": encode(Image.new("LA", SRC, (1, 2)), "PNG"),
        "P": _p_transparent("PNG"),
        "RGBA": encode(Image.new("RGBA", SRC, (1, 2, 3, 4)), "PNG"),
        "CMYK": encode(Image.new("CMYK", SRC, (1, 2, 3, 4)), "JPEG"),
        "I;16": _i16(5),
        "1": encode(Image.new("1", SRC, 1), "PNG"),
    }
    for mode, data in opened.items():
        with Image.open(io.BytesIO(data)) as img:
            assert img.mode == mode


# -- formats ------------------------------------------------------------------------


def _halves(size: tuple[int, int] = (32, 16), left=(255, 0, 0), right=(0, 0, 255)) -> Image.Image:
    width, height = size
    arr = np.empty((height, width, 3), dtype=np.uint8)
    arr[:, : width // 2] = left
    arr[:, width // 2:] = right
    return Image.fromarray(arr)


@pytest.mark.parametrize(("fmt", "tol"), [("JPEG", 24), ("PNG", 0), ("WEBP", 24), ("GIF", 0), ("BMP", 0),
                                          ("TIFF", 0)])
def test_every_format_keeps_the_picture_where_it_was(fmt: str, tol: int) -> None:
    data = encode(_halves(), fmt)
    with Image.open(io.BytesIO(data)) as img:
        assert img.format == fmt
    arr = decode_image(data, (8, 4), key=KEY)
    assert arr.shape == (4, 8, 3) and arr.dtype == np.uint8
    # Columns 0-2 only see the left (red) half of the source, 5-7 only the right (blue) one.
    assert_uniform(arr[:, :3], (3, 4), (255, 0, 0), tol)
    assert_uniform(arr[:, 5:], (3, 4), (0, 0, 255), tol)


def test_frames_are_squashed_to_the_size_not_cropped() -> None:
    # A 40x10 frame with a green strip in its last 4 columns: a centre crop to 10x10
    # would lose the strip; squashing keeps it in the last output column.
    arr = np.zeros((10, 40, 3), dtype=np.uint8)
    arr[:, 36:] = (0, 255, 0)
    out = decode_image(encode(Image.fromarray(arr), "PNG"), (10, 10))
    assert out.shape == (10, 10, 3)
    assert (out[:, -1, 1] > 200).all()
    assert (out[:, :8, 1] == 0).all()


def test_an_image_already_at_the_size_is_returned_pixel_for_pixel() -> None:
    rng = np.random.default_rng(3)
    arr = rng.integers(0, 256, (6, 9, 3), dtype=np.uint8)
    out = decode_image(encode(Image.fromarray(arr), "PNG"), (9, 6))
    np.testing.assert_array_equal(out, arr)


# -- 16-bit ---------------------------------------------------------------------------


def test_sixteen_bit_png_is_scaled_not_clipped() -> None:
    values = np.array([0, 257, 32768, 65535], dtype=np.uint16)
    img = Image.fromarray(np.tile(values.repeat(2), (2, 1)))  # 8x2, each value twice
    data = encode(img, "PNG")
    with Image.open(io.BytesIO(data)) as opened:
        assert opened.mode == "I;16"
    out = decode_image(data, (8, 2))
    grey = out[0, ::2, 0]
    # Clipping (Pillow's own I;16 -> L) would give 255 for everything but 0.
    assert grey.tolist() == [0, 1, 127, 255]
    # Grey stays grey.
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_sixteen_bit_big_endian_tiff_is_scaled_too() -> None:
    raw = np.full((4, 4), 32768, dtype=">u2").tobytes()
    img = Image.frombuffer("I;16B", (4, 4), raw, "raw", "I;16B", 0, 1)
    data = encode(img, "TIFF")
    with Image.open(io.BytesIO(data)) as opened:
        assert opened.mode == "I;16B"
        assert opened.getpixel((0, 0)) == 32768
    assert_uniform(decode_image(data, (3, 2)), (3, 2), (127, 127, 127), 0)


# -- transparency ---------------------------------------------------------------------


def test_fully_transparent_pixels_are_white_whatever_rgb_they_hide() -> None:
    outs = []
    for hidden in [(0, 0, 0), (255, 0, 0), (12, 200, 99)]:
        arr = np.zeros((6, 8, 4), dtype=np.uint8)
        arr[..., :3] = hidden  # alpha stays 0
        outs.append(decode_image(encode(Image.fromarray(arr, "RGBA"), "PNG"), (4, 3)))
    for out in outs:
        assert_uniform(out, (4, 3), WHITE, 0)


def test_partial_alpha_is_composited_onto_white() -> None:
    data = encode(Image.new("RGBA", (4, 4), (0, 0, 0, 128)), "PNG")
    out = decode_image(data, (4, 4))
    # 128/255 black over white.
    assert_uniform(out, (4, 4), (127, 127, 127), 1)


# -- EXIF orientation -----------------------------------------------------------------

RED, BLUE = (255, 0, 0), (0, 0, 255)


def _oriented(fmt: str, orientation: int, size: tuple[int, int] = (40, 20)) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(_halves(size, RED, BLUE), fmt, exif=exif)


def _is_red(block: np.ndarray) -> bool:
    mean = block.reshape(-1, 3).mean(0)
    return bool(mean[0] > 200 and mean[2] < 60)


def _is_blue(block: np.ndarray) -> bool:
    mean = block.reshape(-1, 3).mean(0)
    return bool(mean[2] > 200 and mean[0] < 60)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize(("orientation", "size", "red_part", "blue_part"), [
    # Stored 40x20, red on the left.  (width, height) requested; slices of the output.
    (1, (30, 10), np.s_[:, :12], np.s_[:, 18:]),     # as stored
    (3, (30, 10), np.s_[:, 18:], np.s_[:, :12]),     # 180°: red moves right
    (6, (10, 30), np.s_[:12, :], np.s_[18:, :]),     # 90° clockwise: left edge becomes the top
    (8, (10, 30), np.s_[18:, :], np.s_[:12, :]),     # 90° counter-clockwise: left edge becomes the bottom
])
def test_exif_orientation_is_applied(fmt: str, orientation: int, size: tuple[int, int], red_part, blue_part) -> None:
    data = _oriented(fmt, orientation)
    with Image.open(io.BytesIO(data)) as img:
        assert img.size == (40, 20)
        assert img.getexif().get(0x0112) == orientation
    out = decode_image(data, size, key=KEY)
    assert out.shape == (size[1], size[0], 3)
    assert _is_red(out[red_part]), out[red_part].reshape(-1, 3).mean(0)
    assert _is_blue(out[blue_part]), out[blue_part].reshape(-1, 3).mean(0)


# -- large JPEG, draft mode -----------------------------------------------------------


@pytest.fixture(scope="module")
def big_frame() -> np.ndarray:
    """A 3000x2000 frame: smooth gradients plus a sharp-edged blue band in the left quarter."""
    x = np.linspace(0, 255, 3000, dtype=np.float32)
    y = np.linspace(0, 255, 2000, dtype=np.float32)
    arr = np.empty((2000, 3000, 3), dtype=np.uint8)
    arr[..., 0] = x[None, :]
    arr[..., 1] = y[:, None]
    arr[..., 2] = 40
    arr[:, :750, 2] = 255
    return arr


@pytest.fixture(scope="module")
def big_jpeg(big_frame: np.ndarray) -> bytes:
    return encode(Image.fromarray(big_frame), "JPEG", quality=90)


@pytest.fixture()
def draft_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Record (requested size, size after draft) for every JPEG draft call."""
    calls: list[tuple[tuple[int, int], tuple[int, int]]] = []
    original = JpegImagePlugin.JpegImageFile.draft

    def spy(self: JpegImagePlugin.JpegImageFile, mode: str | None, size: tuple[int, int]) -> Any:
        result = original(self, mode, size)
        calls.append(((size[0], size[1]), self.size))
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    return calls


def _reference(data: bytes, size: tuple[int, int]) -> np.ndarray:
    """Full-resolution decode, EXIF transpose and one resize: what draft mode must approximate."""
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        full = ImageOps.exif_transpose(img).convert("RGB")
    return np.asarray(full.resize(size, RESIZE_FILTER), dtype=np.uint8)


def test_large_jpeg_is_decoded_in_draft_mode_and_matches_a_full_decode(big_jpeg: bytes, draft_calls) -> None:
    out = decode_image(big_jpeg, (224, 224), key=KEY)
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8
    # Draft mode really decoded at 1/8 scale (375x250 instead of 3000x2000, 64x fewer
    # pixels) and never below the 224x224 target.  No timing is asserted: this is the
    # deterministic evidence that the expensive full decode was skipped.
    assert draft_calls == [((224, 224), (375, 250))]
    diff = np.abs(out.astype(np.int16) - _reference(big_jpeg, (224, 224)).astype(np.int16))
    assert diff.mean() < 6, diff.mean()
    # The content is where it should be: the blue band is the left quarter.
    assert out[:, :50, 2].mean() > 200 and out[:, 70:, 2].mean() < 80


def test_draft_mode_asks_for_the_rotated_size_when_exif_rotates(big_frame: np.ndarray, draft_calls) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(Image.fromarray(big_frame), "JPEG", quality=90, exif=exif)
    out = decode_image(data, (200, 300), key=KEY)  # portrait output of a landscape-stored frame
    assert out.shape == (300, 200, 3)
    [(requested, drafted)] = draft_calls
    # Stored landscape, so the draft must be asked for (300, 200), not (200, 300).
    assert requested == (300, 200)
    assert drafted == (375, 250)
    rotated = drafted[::-1]
    assert rotated[0] >= 200 and rotated[1] >= 300  # never decoded below the target
    diff = np.abs(out.astype(np.int16) - _reference(data, (200, 300)).astype(np.int16))
    assert diff.mean() < 6, diff.mean()
    # Orientation 6 is 90° clockwise: the stored left (blue) quarter is now the top quarter.
    assert out[:60, :, 2].mean() > 200 and out[90:, :, 2].mean() < 80


# -- refusals -------------------------------------------------------------------------


def _png_header(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR declaring ``width`` x ``height``, with a token IDAT."""
    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def test_pixel_limit_refuses_a_small_image_over_a_small_limit() -> None:
    data = encode(Image.new("RGB", (100, 100)), "PNG")
    with pytest.raises(DecompressionBombError) as info:
        decode_image(data, (10, 10), limits=DecodeLimits(max_pixels=1000), key=KEY)
    assert_names_key(info.value)
    assert info.value.context["width"] == 100 and info.value.context["height"] == 100
    assert "10,000" in str(info.value) and "1,000" in str(info.value)


@pytest.mark.parametrize(("width", "height"), [
    (10_000, 6_000),    # 60 MP: over our 50 MP default, under Pillow's own warning threshold
    (10_000, 10_000),   # 100 MP: Pillow's DecompressionBombWarning
    (20_000, 20_000),   # 400 MP: Pillow's DecompressionBombError
])
def test_declared_huge_dimensions_are_refused_before_decoding(width: int, height: int) -> None:
    data = _png_header(width, height)
    assert len(data) < 200  # the bomb is in the header, not in the bytes
    with pytest.raises(DecompressionBombError) as info:
        decode_image(data, (224, 224), key=KEY)
    assert_names_key(info.value)
    # Our limit is what refuses it, above Pillow's own thresholds too, and the message names the setting.
    assert info.value.context["width"] == width and info.value.context["height"] == height
    assert "50,000,000-pixel limit" in str(info.value) and "MAX_IMAGE_PIXELS" in str(info.value)


def test_pillows_own_pixel_limit_is_switched_off_once_on_the_first_decode(monkeypatch: pytest.MonkeyPatch) -> None:
    # As in a fresh process (restored after the test, as is Pillow's limit).
    monkeypatch.setattr(imaging, "_pixel_limit_owned", False)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    data = encode(Image.new("L", (100, 100), 70), "PNG")  # 10,000 pixels: Pillow itself would refuse it
    assert_uniform(decode_image(data, (8, 8), key=KEY), (8, 8), (70, 70, 70), 0)
    assert Image.MAX_IMAGE_PIXELS is None
    # Set once, not on every decode: a value set since is left alone.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 5000)
    decode_image(encode(Image.new("RGB", (10, 10)), "PNG"), (5, 5))
    assert Image.MAX_IMAGE_PIXELS == 5000


def test_pixel_limit_is_inclusive() -> None:
    data = encode(Image.new("RGB", (10, 10)), "PNG")
    assert decode_image(data, (5, 5), limits=DecodeLimits(max_pixels=100)).shape == (5, 5, 3)


def test_too_many_bytes_are_refused_before_opening() -> None:
    data = encode(Image.new("RGB", (20, 20), (1, 2, 3)), "PNG")
    with pytest.raises(ImageTooLargeError) as info:
        decode_image(data, (4, 4), limits=DecodeLimits(max_bytes=len(data) - 1), key=KEY)
    assert_names_key(info.value)
    assert info.value.context["size"] == len(data)
    # Exactly at the limit is allowed.
    assert decode_image(data, (4, 4), limits=DecodeLimits(max_bytes=len(data))).shape == (4, 4, 3)


@pytest.mark.parametrize("data", [
    pytest.param(b"", id="empty"),
    pytest.param(np.random.default_rng(42).integers(0, 256, 4096, dtype=np.uint8).tobytes(), id="random"),
    pytest.param(b"this is a plain text file, not a picture\n" * 20, id="text"),
    pytest.param(b'{"camera": "cam-7", "ts": 1700000000}', id="json"),
])
def test_bytes_that_are_not_an_image(data: bytes) -> None:
    with pytest.raises(NotAnImageError) as info:
        decode_image(data, (8, 8), key=KEY)
    assert_names_key(info.value)


def test_messages_without_a_key_still_read_as_sentences() -> None:
    with pytest.raises(NotAnImageError) as info:
        decode_image(b"nope", (8, 8))
    assert "key" not in info.value.context
    assert str(info.value).startswith("The image ")
    assert_sentence(info.value)


def _noise(fmt: str) -> bytes:
    rng = np.random.default_rng(7)
    return encode(Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)), fmt)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_upload_is_reported_as_truncated(fmt: str) -> None:
    data = _noise(fmt)
    with pytest.raises(TruncatedImageError) as info:
        decode_image(data[: len(data) // 2], (16, 16), key=KEY)
    assert isinstance(info.value, InvalidImageError)
    assert_names_key(info.value)


@pytest.mark.filterwarnings("ignore")
def test_damaged_bytes_never_escape_as_anything_but_invalid_image() -> None:
    """Seeded byte-flipping and cutting: the result is an image or an InvalidImageError."""
    rng = np.random.default_rng(11)
    exif = Image.Exif()
    exif[0x0112] = 6
    seeds = [encode(_halves(), "JPEG", exif=exif), encode(_halves(), "PNG", exif=exif), encode(_halves(), "WEBP"),
             encode(_halves(), "GIF"), encode(_halves(), "TIFF")]
    for seed in seeds:
        for _ in range(30):
            data = bytearray(seed)
            for pos in rng.integers(0, len(data), rng.integers(1, 5)):
                data[pos] = rng.integers(0, 256)
            if rng.random() < 0.3:
                data = data[: rng.integers(1, len(data))]
            try:
                out = decode_image(bytes(data), (8, 8), key=KEY)
            except InvalidImageError as exc:
                assert exc.context["key"] == KEY
                assert_sentence(exc)
            else:
                assert out.shape == (8, 8, 3) and out.dtype == np.uint8


# -- strip-wise decoding: the same pixels as the whole-image path -------------------------


def _random_image(mode: str, size: tuple[int, int] = (150, 110)) -> Image.Image:
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    alpha = Image.fromarray(rgb[..., 0])
    return {
        "RGB": lambda: Image.fromarray(rgb),
        "RGBA": lambda: Image.merge("RGBA", [*Image.fromarray(rgb).split(), alpha]),
        "LA": lambda: Image.merge("LA", [Image.fromarray(rgb[..., 1]), alpha]),
        "P": lambda: Image.fromarray(rgb).quantize(32),
        "I;16": lambda: Image.fromarray(rng.integers(0, 65536, rgb.shape[:2]).astype(np.uint16)),
        "F": lambda: Image.fromarray((rng.random(rgb.shape[:2]) * 400 - 50).astype(np.float32)),
    }[mode]()


def _to_rgb_v1(img: Image.Image) -> Image.Image:
    """DECODER_VERSION 1's conversion to RGB, frozen here as it was (git show 08803c6:shared/imaging.py),
    so that a change in shared.imaging's rewritten conversion (16-bit, 32-bit, float, alpha) shows."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in {"I;16", "I;16B", "I;16L", "I;16N", "I"}:
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
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _whole_image_reference(data: bytes, size: tuple[int, int]) -> np.ndarray:
    """What DECODER_VERSION 1 did: the whole frame upright, to RGB (its own conversion), then resized."""
    with Image.open(io.BytesIO(data)) as img:
        img.load()
        return imaging.fit_to_input(_to_rgb_v1(ImageOps.exif_transpose(img)), size)


def _tiny(mode: str) -> Image.Image:
    """A 5x3 image of ``mode`` holding its edge values: the extremes, values past the 8-bit range,
    negatives and fractions where the mode has them, and alpha from 0 to 255."""
    u16 = np.array([[0, 1, 256, 257, 258], [32767, 32768, 32896, 65278, 65279], [65280, 65534, 65535, 514, 771]])
    alpha = np.array([[0, 1, 127, 128, 255]] * 3, dtype=np.uint8)
    grey = np.array([[0, 1, 2, 127, 128], [129, 200, 254, 255, 3], [9, 99, 199, 250, 251]], dtype=np.uint8)
    rgb = np.stack([grey, grey[::-1], 255 - grey], axis=-1)
    if mode in {"I;16", "I;16B", "I;16L"}:
        return Image.frombytes(mode, (5, 3), u16.astype("<u2" if mode != "I;16B" else ">u2").tobytes())
    if mode == "I":
        return Image.fromarray(np.array([[-70000, -1, 0, 256, 257], [258, 65535, 65536, 65792, 2**31 - 1],
                                         [-2**31, 1000, 30000, 40000, 70000]], dtype=np.int32))
    if mode == "F":
        return Image.fromarray(np.array([[-1e9, -0.5, 0.0, 0.4, 0.99], [1.0, 127.5, 254.99, 255.0, 255.01],
                                         [256.0, 1e9, 3.3, 99.9, 200.5]], dtype=np.float32))
    if mode == "P":
        img = Image.fromarray(grey % 4, "L").convert("P")
        img.putpalette([10, 20, 30, 200, 100, 0, 0, 0, 0, 255, 255, 255] + [0] * 252 * 3)
        img.info["transparency"] = 2
        return img
    return {
        "1": lambda: Image.fromarray(grey > 100),
        "L": lambda: Image.fromarray(grey),
        "LA": lambda: Image.merge("LA", [Image.fromarray(grey), Image.fromarray(alpha)]),
        "RGBA": lambda: Image.merge("RGBA", [*Image.fromarray(rgb).split(), Image.fromarray(alpha)]),
        "CMYK": lambda: Image.merge("CMYK", [Image.fromarray(c) for c in (grey, 255 - grey, alpha, grey[::-1])]),
        "RGB": lambda: Image.fromarray(rgb),
    }[mode]()


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "RGB", "RGBA", "CMYK", "I;16", "I;16B", "I;16L", "I", "F"])
def test_the_conversion_to_rgb_is_decoder_version_1s_in_every_mode(mode: str) -> None:
    img = _tiny(mode)
    assert img.mode == mode
    expected = np.asarray(_to_rgb_v1(img.copy()))
    assert np.array_equal(np.asarray(imaging._to_rgb(img.copy())), expected), mode
    # And the same through the whole decoder, strips and all, where a format stores the mode as it is.
    fmt = {"F": "TIFF", "I": "TIFF", "CMYK": "TIFF", "I;16B": None, "I;16L": None}.get(mode, "PNG")
    if fmt is not None:
        data = encode(img, fmt)
        with Image.open(io.BytesIO(data)) as stored:
            assert stored.mode == mode
        assert np.array_equal(decode_image(data, (5, 3)), expected), mode


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA", "P", "I;16", "F"])
def test_strips_give_the_same_pixels_as_the_whole_image_in_every_orientation(
        mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(imaging, "STRIP_PIXELS", 1000)  # many strips, and several tiles a strip
    img = _random_image(mode)
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        data = encode(img, "TIFF" if mode == "F" else "PNG", exif=exif)
        for size in [(24, 16), (7, 31)]:
            assert np.array_equal(decode_image(data, size), _whole_image_reference(data, size)), (mode, orientation)


def test_sides_over_max_side_are_box_averaged_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(imaging, "STRIP_PIXELS", 500)
    monkeypatch.setattr(imaging, "MAX_SIDE", 40)
    arr = np.zeros((30, 400, 3), dtype=np.uint8)
    arr[:, 200:] = (0, 0, 255)
    out = decode_image(encode(Image.fromarray(arr), "PNG"), (8, 4))
    assert_uniform(out[:, :3], (3, 4), (0, 0, 0), 0)
    assert_uniform(out[:, 5:], (3, 4), (0, 0, 255), 0)


def test_a_jpeg_stub_gets_advice() -> None:
    stub = encode(_halves((640, 480)), "JPEG")[:200]
    with pytest.raises(TruncatedImageError) as info:
        decode_image(stub, (8, 8), key=KEY)
    assert_names_key(info.value)
    message = str(info.value)
    assert "200 bytes" in message and "stub" in message and "send the frame again" in message


def test_the_estimate_counts_the_pixels_in_pillows_mode_and_the_decoders_buffers() -> None:
    def estimate(data: bytes) -> int:
        with Image.open(io.BytesIO(data)) as img:
            return estimate_decode_bytes(img, (224, 224))

    grey = estimate(encode(Image.new("L", (2000, 1000)), "PNG"))
    rgba = estimate(encode(Image.new("RGBA", (2000, 1000)), "PNG"))
    webp = estimate(encode(Image.new("RGB", (2000, 1000)), "WEBP", lossless=True))
    assert rgba - grey == 3 * 2000 * 1000  # 4 bytes a pixel against 1
    assert webp - rgba == imaging._WEBP_EXTRA_PER_PIXEL * 2000 * 1000


def test_a_frame_over_max_decode_bytes_is_refused_naming_the_setting() -> None:
    data = encode(Image.new("RGBA", (1000, 1000)), "PNG")
    with pytest.raises(ImageTooLargeToDecodeError) as info:
        decode_image(data, (8, 8), limits=DecodeLimits(max_decode_bytes=10 * 1024 * 1024), key=KEY)
    assert_names_key(info.value)
    assert "MAX_DECODE_MB" in str(info.value) and info.value.context["decode_bytes"] > 10 * 1024 * 1024


def test_decodes_hold_their_estimate_in_the_budget_and_give_it_back() -> None:
    budget = DecodeBudget(256 * 1024 * 1024)
    data = encode(Image.new("RGB", (300, 200), (9, 9, 9)), "PNG")
    decode_image(data, (8, 8), budget=budget)
    with Image.open(io.BytesIO(data)) as img:
        assert budget.peak == estimate_decode_bytes(img, (8, 8))
    assert budget.used == 0
    with pytest.raises(ImageTooLargeToDecodeError) as info:
        decode_image(data, (8, 8), budget=DecodeBudget(1024), key=KEY)
    assert_names_key(info.value)
    assert "FUNCTION_MEMORY_MB" in str(info.value)
