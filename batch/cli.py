"""Command-line flags of ``python -m batch.score`` and the frozen config they build.

The bucket, endpoint and region fall back to ``BUCKET``, ``S3_ENDPOINT_URL`` and
``AWS_REGION`` as in ``training.fit``; everything the function reads from its environment
(``INPUT_PREFIX``, ``RESULTS_PREFIX``, ``MODEL_PREFIX``, ``MAX_IMAGE_BYTES``, ...) is read
the same way here, so a frame scored by either gets the same result.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path

from shared.cameras import CameraRule
from shared.cli import INPUT_PREFIX, add_s3_arguments, resolve_s3_arguments
from shared.clock import parse_time
from shared.config import FunctionSettings, S3Settings, normalise_prefix
from shared.errors import ConfigError
from shared.validation import require_positive

DESCRIPTION = """\
Score every frame under s3://BUCKET/INPUT_PREFIX on Apache Spark with the cloud function's
classification core: results/<key>.json as the function writes them, plus a Parquet results
table at s3://BUCKET/TABLE_PREFIX/results/model_version=<V>/ that makes re-runs resume.
Needs Java 17 or newer.
"""
DEFAULT_FRAMES_PER_TASK = 2000  # a few minutes of MobileNetV2 work on one core


@dataclasses.dataclass(frozen=True)
class BatchConfig:
    bucket: str
    settings: FunctionSettings  # the function's settings, with this run's bucket, prefixes and store
    model: str  # "latest" or a version
    cameras: CameraRule  # how a key names its camera (shared with python -m ops)
    master: str
    since: datetime | None
    until: datetime | None
    keys_file: Path | None
    table_prefix: str
    frames_per_task: int
    download_threads: int
    retries: int
    summary_out: Path | None
    cache_dir: str
    verbose: bool
    progress: bool
    list_threads: int = 16

    @property
    def s3(self) -> S3Settings:
        return self.settings.s3

    @property
    def results_table(self) -> str:
        return f"{self.table_prefix}results/"

    @property
    def summaries_prefix(self) -> str:
        return f"{self.table_prefix}summaries/"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m batch.score", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    s3 = p.add_argument_group("input")
    add_s3_arguments(s3, bucket_help="bucket holding the frames, the models and the results (env BUCKET)",
                     prefix=INPUT_PREFIX)
    s3.add_argument("--camera-regex", metavar="REGEX",
                    help="regex over the key below the input prefix whose match (or first group) names the camera "
                    "(default: the first path part)")
    s3.add_argument("--since", help="only frames last modified at or after this UTC time (2026-11-01 or ISO 8601)")
    s3.add_argument("--until", help="only frames last modified before this UTC time")
    s3.add_argument("--keys", type=Path, metavar="FILE", help="score these keys instead of listing: one key a line, "
                    "or an S3 Inventory CSV (.csv, .csv.gz) or Parquet file")
    md = p.add_argument_group("model and output")
    md.add_argument("--model", default="latest", help="latest (models/latest.json, resolved once) or a VERSION")
    md.add_argument("--table-prefix", default="tables/", help="where the results table and summaries go "
                    "(default tables/)")
    md.add_argument("--summary-out", type=Path, help="also write the summary JSON to this local file")
    sp = p.add_argument_group("Spark")
    sp.add_argument("--master", default="local[*]", help="Spark master (default local[*]; ignored under "
                    "spark-submit, which sets its own)")
    sp.add_argument("--frames-per-task", type=int, default=DEFAULT_FRAMES_PER_TASK,
                    help=f"most frames per Spark task (default {DEFAULT_FRAMES_PER_TASK}, a few minutes of work); "
                    "smaller jobs get about 4 tasks per core of at least 50 frames")
    sp.add_argument("--download-threads", type=int, default=4, help="concurrent downloads per task (default 4)")
    sp.add_argument("--retries", type=int, default=3, help="in-task retries of transient faults (default 3)")
    sp.add_argument("--cache-dir", help="where each executor keeps the bundle (default: the system temp folder)")
    sp.add_argument("--verbose", action="store_true", help="show Spark's own logs")
    sp.add_argument("--no-progress", action="store_true", help="hide the progress line")
    return p


def config_from_args(argv: Sequence[str] | None, env: Mapping[str, str]) -> BatchConfig:
    args = build_parser().parse_args(argv)
    where = resolve_s3_arguments(args, env, prefix=INPUT_PREFIX)
    bucket = where.bucket
    for flag in ("frames_per_task", "download_threads"):
        require_positive(getattr(args, flag), f"--{flag.replace('_', '-')}")
    if args.retries < 0:
        raise ConfigError("--retries must be 0 or more.")
    if args.keys is not None and (args.since or args.until):
        raise ConfigError("Give either --keys or --since/--until, not both: a key list is scored as it is.")
    if args.keys is not None and not args.keys.is_file():
        raise ConfigError(f"--keys {args.keys} is not a file.")
    settings = dataclasses.replace(
        FunctionSettings.from_env(env), model_bucket=bucket, input_prefix=where.prefix, s3=where.s3,
        max_workers=args.download_threads, role="all")  # FUNCTION_ROLE splits deployments; a batch takes every input
    since, until = _when(args.since, "--since"), _when(args.until, "--until")
    if since and until and since >= until:
        raise ConfigError("--since must be before --until.")
    import tempfile

    return BatchConfig(
        bucket=bucket, settings=settings, model=args.model.strip() or "latest",
        cameras=CameraRule(settings.input_prefix, args.camera_regex or None), master=args.master, since=since,
        until=until, keys_file=args.keys,
        table_prefix=normalise_prefix(args.table_prefix), frames_per_task=args.frames_per_task,
        download_threads=args.download_threads, retries=args.retries, summary_out=args.summary_out,
        cache_dir=args.cache_dir or str(Path(tempfile.gettempdir()) / "cctv-batch-model"),
        verbose=args.verbose, progress=not args.no_progress)


def _when(text: str | None, flag: str) -> datetime | None:
    """An ISO date or date-time; without a zone it is UTC."""
    if not text:
        return None
    moment = parse_time(text)
    if moment is None:
        raise ConfigError(f"{flag} {text!r} is not a date or time; use 2026-11-01 or 2026-11-01T06:00:00Z.")
    return moment
