"""Shared helpers for the benchmarks: paths, statistics, tables, machine facts, test frames.

Nothing here imports TensorFlow; Keras is only imported by the benchmarks that need it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
CACHE = BENCH / ".cache"
RESULTS = BENCH / "results"
BACKBONES = ("mobilenet_v2", "resnet50")
FRAME_SIZE = (960, 576)  # the CCTV frame of benchmarks 1-3 (width, height)


def kit(env: Mapping[str, str] | None = None) -> Path:
    """The data kit (real photos, Keras weights): ``CCTV_KIT``, else ``../shared`` beside the repository.

    Absent on most machines: the benches then use generated frames and random weights, and say so
    in their notes.  Read when asked, not at import.
    """
    env = os.environ if env is None else env
    return Path(env.get("CCTV_KIT") or REPO.parent / "shared")


# -- statistics -------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), without numpy."""
    xs = sorted(values)
    if not xs:
        return float("nan")
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summary(values: Sequence[float], digits: int = 3) -> dict[str, Any]:
    """Median and spread (min, max, and the inter-quartile range) of repeated figures."""
    xs = [float(v) for v in values]
    return {
        "median": round(statistics.median(xs), digits),
        "min": round(min(xs), digits),
        "max": round(max(xs), digits),
        "iqr": [round(percentile(xs, 25), digits), round(percentile(xs, 75), digits)],
        "n": len(xs),
        **({"values": [round(v, digits) for v in xs]} if len(xs) <= 20 else {}),
    }


def fmt(s: dict[str, Any] | None, unit: str = "", digits: int = 1) -> str:
    """``median [min-max] unit`` for a summary dict."""
    if not s:
        return "-"
    return f"{s['median']:.{digits}f} [{s['min']:.{digits}f}-{s['max']:.{digits}f}]{(' ' + unit) if unit else ''}"


# -- output -----------------------------------------------------------------------------


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(r: list[str]) -> str:
        return "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)) + " |"

    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for row in Path("/proc/cpuinfo").read_text().splitlines():
            if row.startswith("model name"):
                cpu = row.split(":", 1)[1].strip()
                break
    mem_gb = None
    with contextlib.suppress(OSError, ValueError):
        kb = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        mem_gb = round(kb / 2**20, 1)
    load = None
    with contextlib.suppress(OSError):
        load = [float(x) for x in os.getloadavg()]
    return {"cores": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)), "cpu": cpu, "ram_gib": mem_gb,
            "python": platform.python_version(), "platform": platform.platform(), "loadavg_at_start": load}


def versions() -> dict[str, str]:
    from importlib import metadata

    out = {}
    for name in ("onnxruntime", "numpy", "pillow", "boto3", "tensorflow-cpu", "keras", "moto"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[name] = metadata.version(name)
    return out


# -- processes ----------------------------------------------------------------------------


def main_python() -> str:
    """The interpreter of the development venv (has TensorFlow, moto, ...)."""
    venv = REPO / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def repo_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    from devstack.moto_server import DUMMY_CREDENTIALS

    env = dict(os.environ)
    env.update(DUMMY_CREDENTIALS)  # only ever moto: never a developer's real credentials
    env["PYTHONPATH"] = str(REPO)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra or {})
    return env


def run(cmd: list[str], *, env: dict[str, str] | None = None, timeout: float = 900, cwd: Path = REPO,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, env=env, text=True, capture_output=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd[:4]))} ... failed ({proc.returncode}):\n"
                           f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


@contextlib.contextmanager
def keras_home() -> Iterator[Path | None]:
    """A writable copy of the kit's Keras cache (MobileNetV2 ImageNet weights), or None."""
    src = kit() / "keras" / "models"
    own = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models"
    for candidate in (own, src):
        if (candidate / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5").is_file():
            with tempfile.TemporaryDirectory(prefix="bench-keras-") as tmp:
                shutil.copytree(candidate, Path(tmp) / "models")
                yield Path(tmp)
            return
    yield None


def weights_for(backbone: str, home: Path | None) -> str:
    """ImageNet for MobileNetV2 when the weights are at hand, random otherwise (ResNet50 always)."""
    return "imagenet" if backbone == "mobilenet_v2" and home is not None else "random"


# -- test frames ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Photo:
    name: str
    label: str
    data: bytes


def kit_photos() -> list[Photo]:
    root = kit() / "data" / "vehicles-dev"
    if not root.is_dir():
        return []
    out = []
    for path in sorted(p for p in root.glob("*/*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"}):
        out.append(Photo(f"{path.parent.name}/{path.name}", path.parent.name, path.read_bytes()))
    return out


def _jpeg(img: Any, quality: int = 85) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def frames(n: int, size: tuple[int, int] = FRAME_SIZE, *, seed: int = 0) -> tuple[list[bytes], str]:
    """``n`` JPEG frames of ``size``: kit photos resized (real content), else generated ones.

    Returns the frames and a note on where they came from.
    """
    from PIL import Image, ImageOps

    photos = kit_photos()
    if photos:
        distinct: list[bytes] = []
        for photo in photos[: min(n, len(photos))]:
            with Image.open(io.BytesIO(photo.data)) as img:
                small = ImageOps.exif_transpose(img).convert("RGB").resize(size, Image.Resampling.BILINEAR)
                distinct.append(_jpeg(small))
        src = f"{len(distinct)} kit photos (vehicles-dev) resized to {size[0]}x{size[1]}, JPEG q85"
    else:
        from devstack.samples import generate

        per = max(1, min(n, 100) // 2 + 1)
        distinct = [data for _, _, data in generate(("bus", "car"), per, seed=seed, size=size)][: min(n, 100)]
        src = f"{len(distinct)} generated frames (devstack.samples) at {size[0]}x{size[1]}"
    return [distinct[i % len(distinct)] for i in range(n)], src


def large_frame(size: tuple[int, int]) -> tuple[bytes, str]:
    """A JPEG of exactly ``size``: the kit photo of that size if there is one, else a generated one."""
    from PIL import Image

    for photo in kit_photos():
        with Image.open(io.BytesIO(photo.data)) as img:
            if img.size == size and img.format == "JPEG":
                return photo.data, f"kit {photo.name} ({len(photo.data) / 1e6:.2f} MB)"
    import numpy as np

    from devstack.samples import jpeg_bytes, render

    data = jpeg_bytes(render("bus", np.random.default_rng(0), size), 90)
    return data, f"generated ({len(data) / 1e6:.2f} MB)"


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out
