"""shared.cli: the S3 flags and fallbacks that training, evaluation and batch scoring share."""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

import pytest

from shared.cli import INPUT_PREFIX, TRAIN_PREFIX, PrefixFlag, add_s3_arguments, resolve_s3_arguments
from shared.config import S3Settings
from shared.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def parse(argv: list[str], prefix: PrefixFlag | None = TRAIN_PREFIX) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_s3_arguments(parser.add_argument_group("data"), bucket_help="the bucket (env BUCKET)", prefix=prefix)
    return parser.parse_args(argv)


def test_flags_win_over_the_environment() -> None:
    env = {"BUCKET": "env-b", "S3_ENDPOINT_URL": "http://env:1", "AWS_REGION": "eu-west-1", "TRAIN_PREFIX": "e/"}
    got = resolve_s3_arguments(parse(["--bucket", "b", "--endpoint-url", "http://x:9", "--region", "r",
                                      "--prefix", "/p/q"]), env, prefix=TRAIN_PREFIX)
    assert (got.bucket, got.s3, got.prefix) == ("b", S3Settings("http://x:9", "r"), "p/q/")


def test_the_environment_fills_what_the_flags_leave_out() -> None:
    env = {"BUCKET": "env-b", "S3_ENDPOINT_URL": "http://env:1", "AWS_DEFAULT_REGION": "eu-west-1",
           "INPUT_PREFIX": "cams"}
    got = resolve_s3_arguments(parse([], INPUT_PREFIX), env, prefix=INPUT_PREFIX)
    assert (got.bucket, got.s3, got.prefix) == ("env-b", S3Settings("http://env:1", "eu-west-1"), "cams/")


@pytest.mark.parametrize(("flag", "default"), [(TRAIN_PREFIX, "train/"), (INPUT_PREFIX, "incoming/")])
def test_each_prefix_has_its_default(flag: PrefixFlag, default: str) -> None:
    assert resolve_s3_arguments(parse(["--bucket", "b"], flag), {}, prefix=flag).prefix == default


def test_no_bucket_is_a_config_error_naming_the_flag_and_the_variable() -> None:
    with pytest.raises(ConfigError) as err:
        resolve_s3_arguments(parse([]), {}, prefix=TRAIN_PREFIX)
    assert "--bucket" in err.value.message and "BUCKET" in err.value.message


def test_a_required_prefix_without_a_fallback() -> None:
    flag = PrefixFlag("--prefix", "labelled frames", required=True)
    with pytest.raises(SystemExit):
        parse(["--bucket", "b"], flag)
    got = resolve_s3_arguments(parse(["--bucket", "b", "--prefix", "check"], flag), {"TRAIN_PREFIX": "x/"},
                               prefix=flag)
    assert got.prefix == "check/"
    assert resolve_s3_arguments(parse(["--bucket", "b"], None), {}).prefix == ""


def test_help_names_each_fallback() -> None:
    parser = argparse.ArgumentParser()
    add_s3_arguments(parser, bucket_help="the bucket (env BUCKET)", prefix=INPUT_PREFIX)
    text = " ".join(parser.format_help().split())
    for words in ("env BUCKET", "env INPUT_PREFIX; default incoming/", "env S3_ENDPOINT_URL",
                  "env AWS_REGION or AWS_DEFAULT_REGION"):
        assert words in text


def test_the_function_never_imports_it() -> None:
    # shared/ ships whole in the zip; this module is for the command lines around the function.
    importers = []
    for path in (REPO / "functions").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(name == "shared.cli" or name.startswith("shared.cli.") for name in names):
                importers.append(str(path.relative_to(REPO)))
            if isinstance(node, ast.ImportFrom) and node.module == "shared" and any(
                    a.name == "cli" for a in node.names):
                importers.append(str(path.relative_to(REPO)))
    assert importers == []
