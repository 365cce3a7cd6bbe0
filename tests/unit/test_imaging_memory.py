"""Decoding memory: every legal frame up to MAX_IMAGE_PIXELS decodes with a bounded peak.

Each frame is written straight to disk by a small PNG or TIFF writer (constant rows, streamed
through zlib; TIFF strips share one compressed block), so no 50 MP image is ever built here.
A child process reads the file, takes its resident size as the baseline, decodes, and reports
its high-water mark: the peak above the baseline must stay under 300 MB (the decoded image in
Pillow's own mode, at most 200 MB at 50 MP, plus the strips).
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from shared.config import DEFAULT_MAX_IMAGE_PIXELS

REPO = Path(__file__).resolve().parents[2]
SIDE = int(DEFAULT_MAX_IMAGE_PIXELS ** 0.5)  # 7071 x 7071 = 49,999,041 pixels, the largest legal square
PEAK_LIMIT_MB = 300

# The peak is the kernel's VmHWM, reset to the current size once the file is read: ru_maxrss
# would also count the parent's size at fork time.
CHILD = r"""
import json, sys
from shared.config import DecodeLimits
from shared.imaging import decode_image
from shared.errors import InvalidImageError
limits = DecodeLimits(**json.loads(sys.argv[2]))
def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
data = open(sys.argv[1], "rb").read()
open("/proc/self/clear_refs", "w").write("5")  # VmHWM := VmRSS
base = status("VmRSS")
try:
    out = decode_image(data, (224, 224), limits=limits)
    result = {"shape": list(out.shape), "mean": float(out.mean())}
except InvalidImageError as exc:
    result = {"error": type(exc).__name__, "message": str(exc)}
result["peak_mb"] = (status("VmHWM") - base) / 1e6
print(json.dumps(result))
"""


def _chunk(tag: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))


def write_png(path: Path, colour_type: int, depth: int, row: bytes, extra: bytes = b"", side: int = SIDE) -> Path:
    """A ``side`` x ``side`` PNG whose every row is ``row``, deflated as it is written."""
    ihdr = struct.pack(">IIBBBBB", side, side, depth, colour_type, 0, 0, 0)
    deflate = zlib.compressobj(1)
    with open(path, "wb") as out:
        out.write(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + extra)
        for start in range(0, side, 512):
            if data := deflate.compress((b"\0" + row) * min(512, side - start)):
                out.write(_chunk(b"IDAT", data))
        out.write(_chunk(b"IDAT", deflate.flush()) + _chunk(b"IEND", b""))
    return path


def write_tiff(path: Path, photometric: int, bits: tuple[int, ...], sample_format: int, pixel: bytes,
               *, colormap: bool = False, extra_samples: int | None = None) -> Path:
    """A SIDE x SIDE deflate TIFF of one colour; every full strip points at the same compressed block."""
    rows = 64
    strips = [(rows if start + rows <= SIDE else SIDE - start) for start in range(0, SIDE, rows)]
    blocks = {n: zlib.compress(pixel * SIDE * n, 1) for n in set(strips)}
    body, offsets_of = bytearray(), {}
    for n, block in blocks.items():
        offsets_of[n] = 8 + len(body)
        body += block
    extra = bytearray()
    base = 8 + len(body)

    def array(kind: str, values: list[int]) -> tuple[int, int, int]:
        """(type, count, value-or-offset) of a tag holding ``values``."""
        fmt, code = ("H", 3) if kind == "short" else ("I", 4)
        packed = struct.pack(f"<{len(values)}{fmt}", *values)
        if len(packed) <= 4:
            return code, len(values), struct.unpack("<I", packed.ljust(4, b"\0"))[0]
        offset = base + len(extra)
        extra.extend(packed + b"\0" * (len(packed) % 2))
        return code, len(values), offset

    tags = {256: array("long", [SIDE]), 257: array("long", [SIDE]), 258: array("short", list(bits)),
            259: array("short", [8]), 262: array("short", [photometric]),
            273: array("long", [offsets_of[n] for n in strips]), 277: array("short", [len(bits)]),
            278: array("long", [rows]), 279: array("long", [len(blocks[n]) for n in strips]),
            339: array("short", [sample_format] * len(bits))}
    if colormap:
        tags[320] = array("short", [v * 257 for v in range(256)] * 3)
    if extra_samples is not None:
        tags[338] = array("short", [extra_samples])
    ifd_offset = base + len(extra)
    ifd = struct.pack("<H", len(tags)) + b"".join(
        struct.pack("<HHII", tag, *tags[tag]) for tag in sorted(tags)) + struct.pack("<I", 0)
    path.write_bytes(b"II*\0" + struct.pack("<I", ifd_offset) + bytes(body) + bytes(extra) + ifd)
    return path


PALETTE = _chunk(b"PLTE", bytes(range(256)) * 3) + _chunk(b"tRNS", bytes([0, 128] + [255] * 254))

FRAMES = {  # mode -> a writer of the largest legal frame in it
    "1": lambda p: write_png(p / "1.png", 0, 1, b"\xaa" * ((SIDE + 7) // 8)),
    "L": lambda p: write_png(p / "L.png", 0, 8, b"\x40" * SIDE),
    "LA": lambda p: write_png(p / "LA.png", 4, 8, b"\x40\x80" * SIDE),
    "P": lambda p: write_png(p / "P.png", 3, 8, b"\x01" * SIDE, PALETTE),
    "PA": lambda p: write_tiff(p / "PA.tif", 3, (8, 8), 1, b"\x05\x80", colormap=True, extra_samples=2),
    "RGB": lambda p: write_png(p / "RGB.png", 2, 8, b"\x10\x20\x30" * SIDE),
    "RGBA": lambda p: write_png(p / "RGBA.png", 6, 8, b"\x10\x20\x30\x80" * SIDE),
    "CMYK": lambda p: write_tiff(p / "CMYK.tif", 5, (8, 8, 8, 8), 1, b"\x00\xff\xff\x00"),
    "I;16": lambda p: write_png(p / "I16.png", 0, 16, struct.pack(">H", 40000) * SIDE),
    "I": lambda p: write_tiff(p / "I.tif", 1, (32,), 2, struct.pack("<i", 40000)),
    "F": lambda p: write_tiff(p / "F.tif", 1, (32,), 3, struct.pack("<f", 99.5)),
}


def decode_in_child(path: Path, **limits: int) -> dict:
    proc = subprocess.run([sys.executable, "-c", CHILD, str(path), json.dumps(limits)], check=False, cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.parametrize("mode", list(FRAMES))
def test_the_largest_legal_frame_decodes_under_300_mb_in_every_mode(mode: str, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    path = FRAMES[mode](tmp_path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # for this test's own open; restored after it
    with Image.open(path) as img:  # the file really is what the test says
        assert img.mode == mode and img.size == (SIDE, SIDE)
    result = decode_in_child(path)
    assert result.get("shape") == [224, 224, 3], result
    assert result["peak_mb"] < PEAK_LIMIT_MB, f"{mode}: peak {result['peak_mb']:.0f} MB above the baseline"


def test_a_frame_whose_decoder_needs_too_much_is_refused_before_decoding(tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / "big.webp"
    Image.new("RGB", (SIDE, SIDE // 2), (1, 2, 3)).save(path, lossless=True, quality=0, method=0)
    result = decode_in_child(path)
    assert result["error"] == "ImageTooLargeToDecodeError", result
    assert "MAX_DECODE_MB" in result["message"] and result["message"].endswith(".")
    assert result["peak_mb"] < 50  # refused from the header: nothing was decoded


def test_max_image_pixels_above_pillows_own_limit_is_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    side = 13_500  # 182,250,000 pixels: above Pillow's 178,956,970, below the setting given
    assert side * side > 178_956_970
    path = write_png(tmp_path / "huge.png", 0, 1, b"\xff" * ((side + 7) // 8), side=side)
    result = decode_in_child(path, max_pixels=200_000_000, max_decode_bytes=1 << 30)
    assert result.get("shape") == [224, 224, 3] and result["mean"] == 255.0, result
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)  # restored after the test
    result = decode_in_child(path, max_pixels=100_000_000)
    assert result["error"] == "DecompressionBombError", result
    assert "100,000,000-pixel limit" in result["message"] and "MAX_IMAGE_PIXELS" in result["message"]
