"""``python -m functions.video``: classify the frames of a local clip and summarise them.

    python -m functions.video clip.mp4 --bundle build/local-bundle --out annotated.mp4 --json result.json

``--bundle`` is a bundle folder (``make demo`` keeps one in ``build/local-bundle``) or an
S3 prefix: ``s3://bucket/models/`` (its latest) or ``s3://bucket/models/VERSION``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

from functions.video.pipeline import process_video
from shared.config import VideoLimits
from shared.errors import CCTVError, ConfigError
from shared.validation import positive_arg


def parse_s3_bundle(spec: str) -> tuple[str, str, str | None]:
    """``s3://bucket/models/`` -> (bucket, "models/", None: use latest.json);
    ``s3://bucket/models/v3`` -> (bucket, "models/", "v3"); ``s3://bucket`` -> (bucket, "models/", None)."""
    bucket, _, path = spec.removeprefix("s3://").partition("/")
    if not bucket:
        raise ConfigError(f"{spec!r} names no bucket; use s3://bucket/models/ or s3://bucket/models/VERSION.")
    if not path:
        return bucket, "models/", None
    if path.endswith("/"):
        return bucket, path, None
    prefix, _, version = path.rpartition("/")
    return bucket, f"{prefix}/" if prefix else "", version


@contextlib.contextmanager
def open_classifier(spec: str, env: Mapping[str, str]) -> Iterator[Any]:
    """A classifier from a bundle folder or an S3 prefix (fetched into a temp folder, removed after)."""
    from shared.runtime import Classifier

    if not spec.startswith("s3://"):
        yield Classifier.from_dir(Path(spec))
        return
    from shared.bundle import fetch_bundle, resolve_version
    from shared.config import S3Settings
    from shared.storage import ObjectStore, make_client

    bucket, prefix, pinned = parse_s3_bundle(spec)
    store = ObjectStore(make_client(S3Settings.from_env(env)), bucket)
    version, manifest_sha256 = resolve_version(store, prefix, pinned)
    with tempfile.TemporaryDirectory(prefix="cctv-bundle-") as cache:
        bundle_dir, manifest = fetch_bundle(store, prefix, version, Path(cache), manifest_sha256)
        yield Classifier(bundle_dir, manifest)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m functions.video",
                                     description="Classify the frames of a CCTV clip and summarise them.")
    parser.add_argument("input", type=Path, help="the clip (.mp4, .avi, .mov, .mkv)")
    parser.add_argument("--out", type=Path, help="write an annotated H.264 .mp4 here")
    parser.add_argument("--bundle", required=True,
                        help="a bundle folder (`make demo` keeps one in build/local-bundle), or "
                             "s3://bucket/models/ (latest) or s3://bucket/models/VERSION")
    parser.add_argument("--json", type=Path, help="write the full result (every sampled frame) here")
    parser.add_argument("--sample-fps", type=positive_arg(float),
                        help="classify this many frames per second (default: every frame, or $VIDEO_SAMPLE_FPS)")
    parser.add_argument("--max-frames", type=positive_arg(int),
                        help="classify at most this many frames, spread over the clip "
                             "(default: 1500, or $MAX_VIDEO_FRAMES)")
    return parser


def _limits(args: argparse.Namespace, env: Mapping[str, str]) -> VideoLimits:
    limits = VideoLimits.from_env(env)
    if args.sample_fps is not None:
        limits = dataclasses.replace(limits, sample_fps=args.sample_fps)
    if args.max_frames is not None:
        limits = dataclasses.replace(limits, max_frames=args.max_frames)
    return limits


def _check_out(args: argparse.Namespace) -> None:
    if args.out is None:
        return
    if args.out.suffix.lower() != ".mp4":
        raise ConfigError(f"--out {args.out} must end in .mp4: the annotated clip is H.264 in MP4.")
    if args.out.resolve() == args.input.resolve():
        raise ConfigError("--out names the input clip; choose another file so the clip is not overwritten.")


def format_summary(result: dict[str, Any], source: str) -> str:
    v, s, m = result["video"], result["summary"], result["model"]
    t, rate = result["timings_ms"], result["throughput"]
    fps = f"{v['fps']:g} fps" if v["fps"] else "unknown fps"
    lines = [f"{source}: {v['codec']} {v['width']}x{v['height']}, {fps}, {v['frames_decoded']} frames decoded, "
             f"{v['frames_sampled']} classified (model {m['version']}, {m['backbone']})"]
    for label, share in s["label_share"].items():
        best = s["longest"][label][:1]
        span = f"; longest {best[0]['start_s']:.2f}-{best[0]['end_s']:.2f} s ({best[0]['frames']} frames)" \
            if best else ""
        lines.append(f"  {label:<12} {100 * share:5.1f}% of classified frames{span}")
    lines.append(f"  {len(s['segments'])} segment(s); mostly {s['dominant_label']}")
    if s["imagenet_top"]:
        lines.append("  ImageNet: " + ", ".join(f"{e['class']} {e['mean_probability']:.2f}"
                                                for e in s["imagenet_top"][:3]))
    if result["partial"]:
        lines.append(f"  PARTIAL: {result['partial']['reason']}")
    lines.append(f"  {t['total'] / 1000:.2f} s (decode {t['decode'] / 1000:.2f}, inference "
                 f"{t['inference'] / 1000:.2f}, encode {t['encode'] / 1000:.2f}): {rate['frames_per_s']} frames/s")
    return "\n".join(lines)


def main(argv: list[str] | None = None, *, env: Mapping[str, str] = os.environ, stdout: TextIO = sys.stdout,
         stderr: TextIO = sys.stderr) -> int:
    args = _parser().parse_args(argv)
    try:
        _check_out(args)
        limits = _limits(args, env)
        with open_classifier(args.bundle, env) as classifier:
            result = process_video(args.input, classifier, out_path=args.out, limits=limits, name=str(args.input))
        if args.json:
            args.json.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    except CCTVError as exc:
        print(f"error: {exc}", file=stderr)
        return exc.exit_code
    except OSError as exc:  # an unwritable --out/--json, a full disk
        print(f"error: {exc.strerror or exc} ({exc.filename or 'file'}); check the path and free space.",
              file=stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - the command line promises one line, never a traceback
        print(f"error: unexpected {type(exc).__name__}: {exc}. This is a bug; please report it with the clip.",
              file=stderr)
        return 1
    print(format_summary(result, str(args.input)), file=stdout)
    if args.out:
        print(f"  annotated clip: {args.out}", file=stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
