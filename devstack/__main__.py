"""``python -m devstack`` (``make demo``): the whole system on one machine (the README's main job).

Starts a :class:`devstack.stack.LocalStack` (moto S3 + SQS, notification, worker with the
real handler), publishes or trains a bundle, uploads sample frames and a clip to
``incoming/`` and prints each result as it appears; ``--serve`` keeps it running.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import mimetypes
import signal
import sys
import time
from pathlib import Path
from typing import Any

from devstack.stack import BUCKET, QUEUE, REPO, LocalStack
from functions.results import VIDEO_PHASES
from shared.errors import LocalStackError, StorageError

# A clip's timings_ms also breaks its "process" stage down into these; they are not added again.
CLIP_PHASES = frozenset(VIDEO_PHASES)


def sample_inputs(n: int) -> list[tuple[str, bytes]]:
    """Synthetic frames, plus one file that is not an image, to show an error result."""
    from devstack.samples import generate

    frames = [(f"incoming/cam{i % 3}/{label}_{i:03d}.jpg", data)
              for i, (label, _, data) in enumerate(generate(("bus", "car"), (n + 1) // 2, seed=2024))]
    return frames[:n] + [("incoming/cam9/not-a-frame.jpg", b"this is not a JPEG")]


def sample_clip() -> tuple[str, bytes]:
    """A 3 s 160x120 clip (bus, car, bus; one second each) to show video mode."""
    from devstack.samples import clip_bytes

    return "incoming/cam9/clip.mp4", clip_bytes(("bus", "car", "bus"), seed=2024)


def content_type(key: str) -> str:
    return mimetypes.guess_type(key)[0] or "application/octet-stream"


def _frame_detail(result: dict[str, Any]) -> str:
    positive, threshold = result.get("positive_class"), result.get("threshold")
    if positive is None or threshold is None:
        return f"{result['label']:<8} p={result['probability']:.3f}"
    # A binary head decides on the positive class's score against the stored threshold.
    return f"{result['label']:<8} p({positive})={result['probabilities'][positive]:.3f} vs threshold {threshold:.3f}"


def print_row(key: str, result: dict[str, Any]) -> None:
    if result.get("status") != "ok":
        detail = f"ERROR {result.get('error', {}).get('type', '?')}: {result.get('error', {}).get('message', '')}"
    elif result.get("kind") == "video":
        detail = _clip_detail(result)
    else:
        detail = _frame_detail(result)
    inner = CLIP_PHASES if result.get("kind") == "video" else frozenset()
    ms = sum(v for k, v in result.get("timings_ms", {}).items() if isinstance(v, (int, float)) and k not in inner)
    print(f"  {key:<40} {result.get('status', '?'):<6} {detail}  ({ms:.0f} ms)", flush=True)


def _clip_detail(result: dict[str, Any]) -> str:
    """``mostly car (67% of 30 frames), 240 frames/s -> results/....annotated.mp4``."""
    summary, video, rate = result["summary"], result["video"], result["throughput"]
    label = summary["dominant_label"]
    share = summary["label_share"][label]
    return (f"mostly {label} ({100 * share:.0f}% of {video['frames_sampled']} frames), "
            f"{rate['frames_per_s']:g} frames/s -> {result['annotated_key']}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m devstack",
                                description="Run the classifier locally: moto S3 + SQS, the real handler, "
                                            "sample frames in, results out.")
    p.add_argument("--frames", type=int, default=8, help="sample frames to upload (default 8)")
    p.add_argument("--no-clip", dest="clip", action="store_false",
                   help="upload frames only, not the 3-second sample clip")
    p.add_argument("--serve", action="store_true", help="keep running so you can drop your own frames in")
    p.add_argument("--retrain", action="store_true", help="train a new bundle even if build/local-bundle exists")
    p.add_argument("--images", type=Path, help="train on your own photos, DIR/<label>/*.jpg (implies --retrain)")
    p.add_argument("--verbose", action="store_true", help="show the handler's JSON log lines")
    args = p.parse_args(argv)
    _stop_on_signals()
    # The table below already shows each result; the JSON log lines are for --verbose.
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR, format="%(message)s")
    try:
        with LocalStack() as stack:
            return _run(stack, args)
    except KeyboardInterrupt:
        print("\nlocal: stopped; the moto server is gone too.")
        return 0
    except LocalStackError as exc:
        print(f"local: error: {exc}", file=sys.stderr)
        return 1
    except StorageError as exc:  # moto died (or never answered) outside --serve's loop
        print(f"local: error: the local object store failed ({exc}); run make demo again.", file=sys.stderr)
        return 1


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _stop_on_signals() -> None:
    """Ctrl-C and SIGTERM both unwind through the context managers, so moto never outlives us.

    SIGINT is reset explicitly: a process started in the background inherits it ignored.
    """
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)


def _run(stack: LocalStack, args: argparse.Namespace) -> int:
    ep = stack.server.endpoint_url
    print(f"local: moto S3 + SQS at {ep}; bucket {BUCKET}, queue {QUEUE}, notification on incoming/")
    version = stack.ensure_model(retrain=args.retrain, images=args.images)
    print(f"local: serving model {version}")
    stack.start_worker()
    inputs = sample_inputs(args.frames) + ([sample_clip()] if args.clip else [])
    for key, data in inputs:
        stack.store.put(key, data, content_type=content_type(key))
    print(f"local: uploaded {len(inputs)} objects to s3://{BUCKET}/incoming/; results as they appear:")
    found = stack.wait_for_results([k for k, _ in inputs], on_result=print_row)
    missing = len(inputs) - len(found)
    print(f"local: {len(found)} of {len(inputs)} results written under s3://{BUCKET}/results/"
          + (f"; {missing} MISSING" if missing else ""))
    _ops_view(stack, ep, serving=args.serve)
    if args.serve:
        return _serve(stack, ep) or (1 if missing else 0)
    return 0 if not missing else 1


def _ops_view(stack: LocalStack, endpoint: str, *, serving: bool) -> None:
    """What ops sees of the demo (``python -m ops summary``), and the report it wrote (docs/ops.md)."""
    try:
        from ops.demo import epilogue
    except ImportError as exc:  # a venv without the ops extra (Jinja2)
        print(f"local: no ops summary here ({exc}); install the ops extra")
        return
    epilogue(endpoint, BUCKET, REPO / "build" / "ops-report", queue=QUEUE, env=stack.env,
             shell_prefix="AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing ", serving=serving)


def _serve(stack: LocalStack, endpoint: str) -> int:
    """Print results as they appear until Ctrl-C (0), or until moto stops answering (1)."""
    print("\nlocal: serving; drop your own frames (or .mp4/.avi/.mov/.mkv clips) in, for example:")
    print(f"  AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing aws s3 cp frame.jpg "
          f"s3://{BUCKET}/incoming/frame.jpg --endpoint-url {endpoint}")
    print(f"  AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing aws s3 cp "
          f"s3://{BUCKET}/results/frame.jpg.json - --endpoint-url {endpoint}")
    print(f"  (a clip's annotated copy: s3://{BUCKET}/results/<key>.annotated.mp4)")
    print("local: Ctrl-C stops everything.", flush=True)
    seen: set[str] = set()
    try:
        with contextlib.suppress(KeyboardInterrupt):
            seen = {o.key for o in stack.store.list(stack.settings.results_prefix)}
            while True:
                _print_new(stack, seen)
                time.sleep(1)
    except StorageError as exc:
        print(f"local: {moto_gone(stack, exc)}", file=sys.stderr, flush=True)
        return 1
    print("\nlocal: stopping the worker and the moto server.")
    return 0


def _print_new(stack: LocalStack, seen: set[str]) -> None:
    for obj in stack.store.list(stack.settings.results_prefix):
        if obj.key not in seen and obj.key.endswith(".json"):  # not the annotated .mp4 files
            seen.add(obj.key)
            print_row(obj.key, stack.store.get_json(obj.key))


def moto_gone(stack: LocalStack, exc: StorageError) -> str:
    """One line for a local stack whose moto server stopped answering."""
    proc = stack.server.process
    code = proc.poll() if proc is not None else None
    if code is not None:
        how = f"exited with code {code}" if code >= 0 else f"was killed by signal {-code}"
        return (f"the moto server at {stack.server.endpoint_url} {how}, so the local stack stopped; "
                "run make demo again.")
    return (f"the moto server at {stack.server.endpoint_url} stopped answering ({type(exc).__name__}), so the "
            "local stack stopped; run make demo again.")


if __name__ == "__main__":
    sys.exit(main())
