"""``make demo`` (training part): moto S3 on 127.0.0.1, sample frames, ``training.fit``, the report.

Uses real ImageNet weights when the Keras cache has them; otherwise says so in one
line and trains on random weights (a smoke run).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from devstack.moto_server import DUMMY_CREDENTIALS, MotoServer
from devstack.samples import generate
from shared.backbones import get_backbone
from shared.config import S3Settings
from shared.errors import WeightsNotFoundError
from shared.storage import ObjectStore, make_client
from training.dataset import is_image_key
from training.keras_backbone import keras_home, resolve_weights


def local_images(root: Path) -> Iterator[tuple[str, str, bytes]]:
    """(label, name, bytes) for every image in ROOT/<label>/..., sorted."""
    for path in sorted(p for p in root.glob("*/**/*") if p.is_file() and is_image_key(p.name)):
        label = path.relative_to(root).parts[0]
        yield label, "/".join(path.relative_to(root / label).parts), path.read_bytes()


def seed_bucket(store: ObjectStore, prefix: str, images: Path | None, per_label: int) -> int:
    source = local_images(images) if images else generate(("bus", "car"), per_label, seed=7)
    count = 0
    for label, name, data in source:
        store.put(f"{prefix}{label}/{name}", data, content_type="image/jpeg")
        count += 1
    return count


def choose_weights(backbone: str, env: dict[str, str]) -> str:
    """ImageNet weights when the Keras cache has them or Keras can download them, else random (a smoke run)."""
    try:
        resolve_weights(get_backbone(backbone), "imagenet", home=keras_home(env), seed=0)
        return "imagenet"
    except WeightsNotFoundError as exc:
        print(f"demo: no ImageNet weights, so a smoke run on random weights (labels mean nothing); for real ones "
              f"give this machine network access (Keras downloads them) or set KERAS_HOME to a Keras cache "
              f"holding models/{Path(str(exc.context.get('path'))).name}.")
        return "random"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Train on sample frames in a local moto S3 and print the report.")
    p.add_argument("--images", type=Path, help="seed the bucket with your photos: DIR/<label>/*.jpg")
    p.add_argument("--per-label", type=int, default=60, help="synthetic frames per label (default 60)")
    p.add_argument("--backbone", default="mobilenet_v2")
    p.add_argument("--out", type=Path, default=Path("build/demo-bundle"), help="local copy of the bundle")
    args = p.parse_args(argv)
    os.environ.update({k: os.environ.get(k, v) for k, v in DUMMY_CREDENTIALS.items()})
    from training import fit

    with MotoServer() as server:
        print(f"demo: moto S3 at {server.endpoint_url}")
        store = ObjectStore(make_client(S3Settings(server.endpoint_url, "us-east-1")), "cctv-demo")
        store.client.create_bucket(Bucket=store.bucket)
        n = seed_bucket(store, "train/", args.images, args.per_label)
        print(f"demo: uploaded {n} frames to s3://{store.bucket}/train/")
        weights = choose_weights(args.backbone, dict(os.environ))
        return fit.main(["--bucket", store.bucket, "--prefix", "train/", "--endpoint-url", server.endpoint_url,
                         "--backbone", args.backbone, "--weights", weights, "--out", str(args.out)])


if __name__ == "__main__":
    sys.exit(main())
