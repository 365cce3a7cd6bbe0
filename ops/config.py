"""The flags every ``python -m ops`` command shares, their environment fallbacks, and the
frozen :class:`OpsConfig` they build (the same conventions as ``training.fit``)."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from functions.results import result_key_for
from ops.source import default_cache_dir
from ops.table import TABLE_PREFIX
from shared.cameras import CameraRule
from shared.cli import RESULTS_PREFIX, PrefixFlag, add_s3_arguments, resolve_prefix, resolve_s3_arguments
from shared.clock import Clock, utc_now
from shared.config import FunctionSettings, S3Settings, normalise_prefix
from shared.storage import make_client
from shared.validation import require_positive

# ops' own wording of the shared flag (shared.cli.INPUT_PREFIX says "frames under this prefix").
INPUT_PREFIX = PrefixFlag("--input-prefix", "where frames land (env INPUT_PREFIX; default incoming/)",
                          env="INPUT_PREFIX", default="incoming/")


@dataclasses.dataclass(frozen=True)
class OpsConfig:
    bucket: str
    s3: S3Settings
    input_prefix: str
    results_prefix: str
    table_prefix: str
    camera: CameraRule
    cache_dir: Path | None
    workers: int
    source: str  # auto, objects or table
    sqs_endpoint_url: str | None
    as_json: bool
    clock: Clock = utc_now
    # Keys from the env mapping handed to main (None: botocore's default chain, e.g. AWS_PROFILE).
    credentials: dict[str, str] | None = dataclasses.field(default=None, repr=False)

    @property
    def function_settings(self) -> FunctionSettings:
        # Built here so the prefix rules (normalised, not overlapping) are the function's own.
        return FunctionSettings(input_prefix=self.input_prefix, results_prefix=self.results_prefix, s3=self.s3)

    def result_key(self, input_key: str) -> str | None:
        return result_key_for(self.function_settings, input_key)


def add_common(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("where the results are")
    add_s3_arguments(g, bucket_help="bucket holding inputs and results (env BUCKET)", prefix=INPUT_PREFIX)
    g.add_argument(RESULTS_PREFIX.flag, help=RESULTS_PREFIX.help)
    g.add_argument("--table-prefix", help=f"the batch job's Parquet results table (default {TABLE_PREFIX})")
    g.add_argument("--camera-regex", metavar="REGEX", help="regex over the key below the input prefix whose first "
                   "group (or whole match) names the camera (default: the first folder)")
    g.add_argument("--source", choices=("auto", "objects", "table"), default="auto",
                   help="read result objects, the Parquet table, or let ops choose (default auto: the table "
                   "when it exists and many results are not cached yet)")
    g.add_argument("--cache-dir", type=Path, help="local cache of result documents (env OPS_CACHE_DIR; default "
                   "$XDG_CACHE_HOME/cctv-ops or ~/.cache/cctv-ops)")
    g.add_argument("--no-cache", action="store_true", help="neither read nor write the local cache")
    g.add_argument("--workers", type=int, default=16, help="concurrent GETs (default 16)")
    g.add_argument("--json", dest="as_json", action="store_true", help="print JSON instead of a table")


def config_from_args(args: argparse.Namespace, env: Mapping[str, str], clock: Clock = utc_now) -> OpsConfig:
    where = resolve_s3_arguments(args, env, prefix=INPUT_PREFIX)
    require_positive(args.workers, "--workers")
    config = OpsConfig(
        bucket=where.bucket, s3=where.s3, input_prefix=where.prefix,
        results_prefix=resolve_prefix(args, env, RESULTS_PREFIX),
        table_prefix=normalise_prefix(args.table_prefix or TABLE_PREFIX),
        camera=CameraRule(where.prefix, args.camera_regex),
        cache_dir=None if args.no_cache else (args.cache_dir or default_cache_dir(env)),
        workers=args.workers, source=args.source,
        sqs_endpoint_url=env.get("SQS_ENDPOINT_URL") or where.s3.endpoint_url,
        as_json=args.as_json, clock=clock, credentials=credentials_from(env))
    config.function_settings  # noqa: B018 - refuses overlapping prefixes now, with the function's message
    return config


def credentials_from(env: Mapping[str, str]) -> dict[str, str] | None:
    """Explicit keys from ``env`` when it has them, as boto3 keyword arguments."""
    if not (env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY")):
        return None
    keys = {"aws_access_key_id": env["AWS_ACCESS_KEY_ID"], "aws_secret_access_key": env["AWS_SECRET_ACCESS_KEY"]}
    if env.get("AWS_SESSION_TOKEN"):
        keys["aws_session_token"] = env["AWS_SESSION_TOKEN"]
    return keys


def client(config: OpsConfig) -> Any:
    """``shared.storage.make_client``'s S3 client, with a faster listing parser and ``env``'s keys.

    A cached ``ops summary`` is mostly a listing, and botocore spends most of its share of it
    parsing: each object's LastModified with dateutil (a third of the time, profiled over
    3,000 results) and each ``<Contents>`` generically (``ops.parsing``).
    """
    from ops.parsing import ListFriendlyParserFactory, fast_timestamp

    return make_client(config.s3, max_pool_connections=max(16, config.workers),
                       parser_factory=ListFriendlyParserFactory(timestamp_parser=fast_timestamp),
                       credentials=config.credentials)
