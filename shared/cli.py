"""The S3 flags the command lines share (bucket, endpoint, region, input prefix) and their env fallbacks.

For the tools around the function (``training.fit``, ``training.evaluate``, ``batch.score``,
``python -m ops``), never for the function itself: nothing in ``functions/`` imports
this module, so it stays off the cold path though ``shared/`` ships whole.

``add_s3_arguments`` declares the flags and ``resolve_s3_arguments`` reads them back with the
same fallbacks everywhere: ``--bucket`` or ``BUCKET``, ``--endpoint-url`` or
``S3_ENDPOINT_URL``, ``--region`` or ``AWS_REGION`` (``shared.config.S3Settings.from_env``),
and the input prefix from its flag, its environment variable, then its default.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping
from typing import Any, Protocol

from shared.config import S3Settings, normalise_prefix
from shared.errors import ConfigError

ENDPOINT_HELP = "S3 endpoint for Yandex, MinIO or moto; omit for AWS (env S3_ENDPOINT_URL)"
REGION_HELP = "S3 region (env AWS_REGION or AWS_DEFAULT_REGION)"


@dataclasses.dataclass(frozen=True)
class PrefixFlag:
    """The flag naming where a tool's inputs are, and where its value comes from when not given."""

    flag: str  # "--prefix", "--input-prefix"
    help: str
    env: str | None = None  # e.g. TRAIN_PREFIX, INPUT_PREFIX
    default: str | None = None
    required: bool = False

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


TRAIN_PREFIX = PrefixFlag("--prefix", "prefix above the label folders (env TRAIN_PREFIX; default train/)",
                          env="TRAIN_PREFIX", default="train/")
INPUT_PREFIX = PrefixFlag("--input-prefix", "frames under this prefix (env INPUT_PREFIX; default incoming/)",
                          env="INPUT_PREFIX", default="incoming/")
RESULTS_PREFIX = PrefixFlag("--results-prefix", "where results go (env RESULTS_PREFIX; default results/)",
                            env="RESULTS_PREFIX", default="results/")


class ArgumentAdder(Protocol):
    """An ``argparse.ArgumentParser`` or one of its argument groups."""

    def add_argument(self, *args: Any, **kwargs: Any) -> Any: ...


@dataclasses.dataclass(frozen=True)
class S3Args:
    bucket: str
    s3: S3Settings
    prefix: str  # normalised (one trailing "/"); "" when the tool has no prefix flag


def add_s3_arguments(parser: ArgumentAdder, *, bucket_help: str, prefix: PrefixFlag | None = None) -> None:
    """``--bucket``, the prefix flag (if any), ``--endpoint-url`` and ``--region``, in that order."""
    parser.add_argument("--bucket", help=bucket_help)
    if prefix is not None:
        parser.add_argument(prefix.flag, required=prefix.required, help=prefix.help)
    parser.add_argument("--endpoint-url", help=ENDPOINT_HELP)
    parser.add_argument("--region", help=REGION_HELP)


def resolve_s3_arguments(args: argparse.Namespace, env: Mapping[str, str], *,
                         prefix: PrefixFlag | None = None) -> S3Args:
    """The bucket (a ``ConfigError`` without one), the store and the prefix, flags first, then ``env``."""
    bucket = args.bucket or env.get("BUCKET")
    if not bucket:
        raise ConfigError("No bucket given; pass --bucket NAME or set BUCKET.")
    from_env = S3Settings.from_env(env)
    s3 = S3Settings(args.endpoint_url or from_env.endpoint_url, args.region or from_env.region)
    return S3Args(bucket, s3, "" if prefix is None else resolve_prefix(args, env, prefix))


def resolve_prefix(args: argparse.Namespace, env: Mapping[str, str], prefix: PrefixFlag) -> str:
    """A prefix flag's value, else its environment variable, else its default; normalised (one trailing "/")."""
    where = getattr(args, prefix.dest) or (env.get(prefix.env) if prefix.env else None) or prefix.default or ""
    return normalise_prefix(where)
