"""Command-line flags of ``python -m training.fit`` and the frozen config they build."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from shared.backbones import backbone_names
from shared.cli import TRAIN_PREFIX, add_s3_arguments, resolve_s3_arguments
from shared.config import DecodeLimits, S3Settings, normalise_prefix
from shared.errors import ConfigError
from shared.validation import require_positive
from training import head_input as head_inputs

DESCRIPTION = """\
Train a frame classifier on labelled images in S3 and save a versioned model bundle.

Images are listed under s3://BUCKET/PREFIX/<label>/..., one folder per label. Features
come from an ImageNet backbone; a LightGBM head is cross-validated, fitted on all the
data, exported to ONNX with measured parity, and written to s3://BUCKET/MODEL_PREFIX<version>/.
"""


@dataclasses.dataclass(frozen=True)
class FitConfig:
    bucket: str
    prefix: str
    s3: S3Settings
    labels: tuple[str, ...] | None
    positive: str | None
    backbone: str
    weights: str
    folds: int
    seed: int
    batch_size: int
    workers: int
    cache_prefix: str | None
    model_prefix: str
    out: Path | None
    promote: bool
    group_by: str | None
    min_auc: float
    max_unreadable: float
    limits: DecodeLimits
    head_overrides: dict[str, Any]
    progress: bool
    parity_images: int
    head_input: str = "auto"
    test_prefix: str | None = None
    gate_margin: float = 0.01
    force: bool = False
    onnx_cache_prefix: str | None = "cache/onnx/"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m training.fit", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    s3 = p.add_argument_group("data in S3")
    add_s3_arguments(s3, bucket_help="bucket holding the labelled images (env BUCKET)", prefix=TRAIN_PREFIX)
    s3.add_argument("--labels", help="comma-separated labels to use, e.g. bus,car (default: every label folder)")
    s3.add_argument("--positive", help="positive class of a binary head (default: the second label in sorted order)")
    s3.add_argument("--group-by", metavar="REGEX", help="regex over the key below PREFIX whose match (or first group) "
                    "names a camera or sequence; its frames stay in one fold (StratifiedGroupKFold)")
    s3.add_argument("--max-unreadable", type=float, default=0.05,
                    help="fail when more than this share of images cannot be decoded (default 0.05)")
    s3.add_argument("--max-image-bytes", type=int, default=DecodeLimits().max_bytes, help="largest image accepted")
    s3.add_argument("--max-image-pixels", type=int, default=DecodeLimits().max_pixels,
                    help="largest pixel count accepted (decompression-bomb guard)")
    fe = p.add_argument_group("features")
    fe.add_argument("--backbone", default="mobilenet_v2", choices=backbone_names(), help="default mobilenet_v2")
    fe.add_argument("--weights", default="imagenet", help="imagenet (Keras cache under $KERAS_HOME/models), "
                    "PATH to a local .h5 weights file, or random (smoke runs; marked in the manifest)")
    fe.add_argument("--batch-size", type=int, default=32, help="images per backbone batch (default 32)")
    fe.add_argument("--workers", type=int, default=8, help="concurrent S3 downloads and decodes (default 8)")
    fe.add_argument("--cache-prefix", default="cache/features/",
                    help="where the feature cache lives in the bucket (default cache/features/)")
    fe.add_argument("--onnx-cache-prefix", default="cache/onnx/",
                    help="where exported ONNX backbones are kept for re-runs (default cache/onnx/)")
    fe.add_argument("--no-cache", action="store_true",
                    help="neither read nor write the feature cache or the ONNX backbone cache")
    fe.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    hd = p.add_argument_group("head")
    hd.add_argument("--folds", type=int, default=5, help="cross-validation folds (default 5)")
    hd.add_argument("--seed", type=int, default=42, help="seed for folds, LightGBM and random weights (default 42)")
    hd.add_argument("--min-auc", type=float, default=0.6,
                    help="fail (and do not promote) below this mean CV ROC AUC or at the majority-class "
                    "accuracy (default 0.6; 0 turns the check off, for smoke runs only)")
    hd.add_argument("--head-input", choices=head_inputs.KINDS, default="auto",
                    help="what the head reads: imagenet_groups (the logged ImageNet class probabilities and vehicle "
                    "groups; carries over to new cameras), pooled (the backbone's pooled features), or auto "
                    "(default: imagenet_groups when the weights have their ImageNet top, else pooled)")
    hd.add_argument("--n-estimators", type=int, help="LightGBM boosting rounds (default 800)")
    hd.add_argument("--learning-rate", type=float, help="LightGBM learning rate (default 0.025)")
    hd.add_argument("--num-leaves", type=int, help="LightGBM leaves per tree (default scales with the data)")
    out = p.add_argument_group("bundle")
    out.add_argument("--model-prefix", default="models/", help="where bundles go in the bucket (default models/)")
    out.add_argument("--out", type=Path, help="also write the bundle to this local folder")
    out.add_argument("--no-promote", action="store_true", help="do not point models/latest.json at the new bundle")
    out.add_argument("--test-prefix", metavar="P", help="labelled frames (P<label>/...) to score the new bundle and "
                     "the promoted one on before promotion; promote only if the new one is not worse")
    out.add_argument("--gate-margin", type=float, default=0.01, help="how much lower accuracy or ROC AUC on "
                     "--test-prefix than the promoted model's still promotes (default 0.01)")
    out.add_argument("--force", action="store_true", help="promote even if the gate finds the new model worse "
                     "(recorded in models/latest.json)")
    out.add_argument("--parity-images", type=int, default=32,
                     help="training images used for the Keras/ONNX parity check (default 32)")
    return p


def config_from_args(argv: Sequence[str] | None, env: Mapping[str, str]) -> FitConfig:
    args = build_parser().parse_args(argv)
    where = resolve_s3_arguments(args, env, prefix=TRAIN_PREFIX)
    _check_numbers(args)
    overrides = {k: v for k, v in (("n_estimators", args.n_estimators), ("learning_rate", args.learning_rate),
                                   ("num_leaves", args.num_leaves)) if v is not None}
    return FitConfig(
        bucket=where.bucket, prefix=where.prefix, s3=where.s3,
        labels=tuple(x.strip() for x in args.labels.split(",") if x.strip()) if args.labels else None,
        positive=args.positive, backbone=args.backbone, weights=args.weights, folds=args.folds, seed=args.seed,
        batch_size=args.batch_size, workers=args.workers,
        cache_prefix=None if args.no_cache else normalise_prefix(args.cache_prefix),
        model_prefix=normalise_prefix(args.model_prefix), out=args.out, promote=not args.no_promote,
        group_by=args.group_by, min_auc=args.min_auc, max_unreadable=args.max_unreadable,
        limits=DecodeLimits(args.max_image_bytes, args.max_image_pixels), head_overrides=overrides,
        progress=not args.no_progress, parity_images=args.parity_images, head_input=args.head_input,
        test_prefix=normalise_prefix(args.test_prefix) if args.test_prefix else None, gate_margin=args.gate_margin,
        force=args.force, onnx_cache_prefix=None if args.no_cache else normalise_prefix(args.onnx_cache_prefix))


def _check_numbers(args: argparse.Namespace) -> None:
    for flag in ("folds", "batch_size", "workers", "parity_images", "max_image_bytes", "max_image_pixels"):
        require_positive(getattr(args, flag), f"--{flag.replace('_', '-')}")  # the one positive-number rule
    if args.folds < 2:
        raise ConfigError("--folds must be at least 2 for cross-validation.")
    if not 0 <= args.gate_margin < 1:
        raise ConfigError("--gate-margin is a share between 0 and 1, e.g. 0.01.")
    if not 0 <= args.max_unreadable < 1:
        raise ConfigError("--max-unreadable is a share between 0 and 1, e.g. 0.05.")
