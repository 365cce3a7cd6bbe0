"""Frozen settings objects, built from the environment at the edges only.

Nothing here reads ``os.environ`` at import time: callers pass a mapping
(``os.environ`` in production, a plain dict in tests).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from shared.errors import ConfigError
from shared.validation import require_positive

DEFAULT_MAX_IMAGE_BYTES = 25 * 1024 * 1024
# 50 MP admits 8K frames and 4:3 photos from 40 MP sensors; beyond that is a bomb.
DEFAULT_MAX_IMAGE_PIXELS = 50_000_000
DEFAULT_MAX_VIDEO_BYTES = 200 * 1024 * 1024
MIB = 1024 * 1024
# What one frame's decode may take at most (its estimate from the header: the decoded pixels
# in Pillow's mode, the decoder's own buffers and the working strips).  256 MiB admits every
# 50 MP PNG, TIFF and baseline JPEG in any mode; see shared/imaging.py for what it refuses.
DEFAULT_MAX_DECODE_MB = 256
# Memory the function has when neither AWS_LAMBDA_FUNCTION_MEMORY_SIZE nor FUNCTION_MEMORY_MB
# is set (the local stack, tests): the deployed clip function's size.
DEFAULT_FUNCTION_MEMORY_MB = 2048
# Kept out of the decode budget: the interpreter, onnxruntime with its model and the batch
# of 224x224 frames (a worker peaked at 273 MB with MobileNetV2, 388 MB with ResNet50).
RESERVED_MEMORY_MB = 512
# FUNCTION_ROLE values: one function for everything, or a frame function and a clip function.
ROLES = ("all", "frames", "clips")


def normalise_prefix(prefix: str) -> str:
    """Return ``prefix`` without a leading slash and with exactly one trailing slash."""
    prefix = prefix.strip().lstrip("/")
    return prefix.rstrip("/") + "/" if prefix else ""


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"Set {name} to a whole number; it is {raw!r}.", setting=name) from None
    return require_positive(value, name)


@dataclasses.dataclass(frozen=True)
class S3Settings:
    """Where the object store is. ``endpoint_url`` is None for AWS itself."""

    endpoint_url: str | None = None
    region: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> S3Settings:
        return cls(
            endpoint_url=env.get("S3_ENDPOINT_URL") or env.get("AWS_ENDPOINT_URL_S3") or None,
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
        )


@dataclasses.dataclass(frozen=True)
class DecodeLimits:
    """What one frame may be: bytes on disk, declared pixels, and memory to decode it."""

    max_bytes: int = DEFAULT_MAX_IMAGE_BYTES
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    max_decode_bytes: int = DEFAULT_MAX_DECODE_MB * MIB

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> DecodeLimits:
        return cls(
            max_bytes=_int(env, "MAX_IMAGE_BYTES", DEFAULT_MAX_IMAGE_BYTES),
            max_pixels=_int(env, "MAX_IMAGE_PIXELS", DEFAULT_MAX_IMAGE_PIXELS),
            max_decode_bytes=_int(env, "MAX_DECODE_MB", DEFAULT_MAX_DECODE_MB) * MIB,
        )


def decode_budget_bytes(memory_mb: int) -> int:
    """Bytes all threads may spend decoding frames at once, for a function of ``memory_mb``.

    Everything but RESERVED_MEMORY_MB, and never less than a quarter of the memory (a
    small function then decodes one modest frame at a time rather than none).
    """
    return max(memory_mb - RESERVED_MEMORY_MB, memory_mb // 4) * MIB


def _number(env: Mapping[str, str], name: str, default: float | None, kind: type) -> Any:
    """``env[name]`` as ``kind`` (int or float), ``default`` when unset or empty; range checks are the caller's."""
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        return kind(raw)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise ConfigError(f"Set {name} to {what}; it is {raw!r}.", setting=name) from None


@dataclasses.dataclass(frozen=True)
class VideoLimits:
    """What a clip may be. ``sample_fps=None`` classifies every frame (up to ``max_frames``)."""

    max_bytes: int = DEFAULT_MAX_VIDEO_BYTES
    max_duration_s: float = 600.0
    max_frames: int = 1500
    sample_fps: float | None = None
    # Pixels a frame, checked before the first frame is decoded.  3840x2160 (4K UHD) is the
    # largest CCTV cameras commonly record; a 4K clip peaks near 850 MiB resident (a frame is
    # 12 MB decoded plus 25 MB as RGB, times the frames queued for annotation, plus x264's
    # reference frames), inside the function's 2 GB.  8K would be four times that.
    max_pixels: int = 3840 * 2160
    # Frames decoded (and re-encoded) per clip: what bounds the work, as max_frames only
    # bounds what is classified.  None: max_duration_s at 60 fps (DECODED_FPS), the fastest
    # common CCTV rate; 7,200 under the deployed MAX_VIDEO_SECONDS=120.  This stops a
    # 240 fps clip or a header that understates the frame count, not a slow clip: at
    # 1080p one vCPU decodes, annotates and encodes ~16 frames/s, 4K ~2.4 frames/s.
    max_decoded_frames: int | None = None

    DECODED_FPS = 60  # not a field (no annotation)

    def __post_init__(self) -> None:
        for field, setting in (("max_bytes", "MAX_VIDEO_BYTES"), ("max_duration_s", "MAX_VIDEO_SECONDS"),
                               ("max_frames", "MAX_VIDEO_FRAMES"), ("sample_fps", "VIDEO_SAMPLE_FPS"),
                               ("max_pixels", "MAX_VIDEO_PIXELS"),
                               ("max_decoded_frames", "MAX_VIDEO_DECODED_FRAMES")):
            value = getattr(self, field)
            if value is not None:
                require_positive(value, setting)

    @property
    def decoded_frames_limit(self) -> int:
        """``max_decoded_frames``, or ``max_duration_s`` at ``DECODED_FPS`` when that is unset."""
        if self.max_decoded_frames is not None:
            return self.max_decoded_frames
        return max(1, round(self.max_duration_s * self.DECODED_FPS))

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> VideoLimits:
        default = cls()
        return cls(max_bytes=_number(env, "MAX_VIDEO_BYTES", default.max_bytes, int),
                   max_duration_s=_number(env, "MAX_VIDEO_SECONDS", default.max_duration_s, float),
                   max_frames=_number(env, "MAX_VIDEO_FRAMES", default.max_frames, int),
                   sample_fps=_number(env, "VIDEO_SAMPLE_FPS", None, float),
                   max_pixels=_number(env, "MAX_VIDEO_PIXELS", default.max_pixels, int),
                   max_decoded_frames=_number(env, "MAX_VIDEO_DECODED_FRAMES", None, int))


@dataclasses.dataclass(frozen=True)
class FunctionSettings:
    """Everything the cloud function needs, validated once per container."""

    model_bucket: str | None = None
    input_prefix: str = "incoming/"
    results_prefix: str = "results/"
    model_prefix: str = "models/"
    model_version: str | None = None
    model_cache_dir: str = "/tmp/cctv-model"
    s3: S3Settings = dataclasses.field(default_factory=S3Settings)
    limits: DecodeLimits = dataclasses.field(default_factory=DecodeLimits)
    video: VideoLimits = dataclasses.field(default_factory=VideoLimits)
    max_workers: int = 4
    # The function's memory: Lambda's AWS_LAMBDA_FUNCTION_MEMORY_SIZE, else FUNCTION_MEMORY_MB.
    memory_mb: int = DEFAULT_FUNCTION_MEMORY_MB
    # What this deployment of the handler takes (FUNCTION_ROLE): "all" (one function for
    # frames and clips), "frames" (clip keys are left to a separate clip function) or "clips".
    role: str = "all"

    @property
    def decode_budget_bytes(self) -> int:
        """See :func:`decode_budget_bytes`: what the frames of one invocation may decode at once."""
        return decode_budget_bytes(self.memory_mb)

    def __post_init__(self) -> None:
        for name in ("input_prefix", "results_prefix", "model_prefix"):
            object.__setattr__(self, name, normalise_prefix(getattr(self, name)))
        self._refuse_overlap()
        if self.role not in ROLES:
            raise ConfigError(f"Set FUNCTION_ROLE to one of {', '.join(ROLES)}; it is {self.role!r}.",
                              setting="FUNCTION_ROLE")

    def _refuse_overlap(self) -> None:
        pairs = [("INPUT_PREFIX", self.input_prefix), ("RESULTS_PREFIX", self.results_prefix),
                 ("MODEL_PREFIX", self.model_prefix)]
        for i, (name_a, a) in enumerate(pairs):
            for name_b, b in pairs[i + 1:]:
                if a.startswith(b) or b.startswith(a):
                    raise ConfigError(
                        f"{name_a} ({a!r}) and {name_b} ({b!r}) overlap, so the function could "
                        "trigger itself or read its own output; give them separate, non-empty prefixes.",
                        setting=name_a,
                    )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> FunctionSettings:
        return cls(
            model_bucket=env.get("MODEL_BUCKET") or env.get("BUCKET") or None,
            input_prefix=env.get("INPUT_PREFIX", "incoming/"),
            results_prefix=env.get("RESULTS_PREFIX", "results/"),
            model_prefix=env.get("MODEL_PREFIX", "models/"),
            model_version=env.get("MODEL_VERSION") or None,
            model_cache_dir=env.get("MODEL_CACHE_DIR", "/tmp/cctv-model"),
            s3=S3Settings.from_env(env),
            limits=DecodeLimits.from_env(env),
            video=VideoLimits.from_env(env),
            max_workers=_int(env, "MAX_WORKERS", 4),
            memory_mb=_int(env, "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
                           _int(env, "FUNCTION_MEMORY_MB", DEFAULT_FUNCTION_MEMORY_MB)),
            role=(env.get("FUNCTION_ROLE") or "all").strip().lower(),
        )
