"""Real model bundles for the benchmarks, trained once with ``python -m training.fit`` and cached.

``bench/.cache/bundles/<backbone>/`` holds a verified bundle; it is reused while it
verifies.  MobileNetV2 uses ImageNet weights when the Keras cache has them; ResNet50
always uses random weights (the kit has no ResNet50 weights): its speed is the same.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from bench.common import CACHE, keras_home, kit_photos, log, main_python, repo_env, run, weights_for


def bundle_dir(backbone: str) -> Path:
    return CACHE / "bundles" / backbone


def cached(backbone: str) -> Path | None:
    from shared.bundle import verify_dir
    from shared.errors import BundleError

    path = bundle_dir(backbone)
    try:
        verify_dir(path)
    except BundleError:
        return None
    return path


def ensure_bundle(backbone: str) -> Path:
    """The cached bundle for ``backbone``, training it first if needed (about 1-3 minutes)."""
    path = cached(backbone)
    if path is not None:
        return path
    from devstack.moto_server import MotoServer
    from shared.config import S3Settings
    from shared.storage import ObjectStore, make_client

    target = bundle_dir(backbone)
    shutil.rmtree(target, ignore_errors=True)
    started = time.perf_counter()
    with keras_home() as home, MotoServer() as server:
        env = repo_env({"KERAS_HOME": str(home)} if home else None)
        import os

        os.environ.update({k: env[k] for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")})
        store = ObjectStore(make_client(S3Settings(server.endpoint_url, "us-east-1")), "bench-train")
        store.client.create_bucket(Bucket=store.bucket)
        photos = kit_photos()
        if photos:
            for p in photos:
                store.put(f"train/{p.name}", p.data, content_type="image/jpeg")
            source = f"{len(photos)} kit photos (vehicles-dev)"
        else:
            from devstack.samples import generate

            n = 0
            for label, name, data in generate(("bus", "car"), 60, seed=7):
                store.put(f"train/{label}/{name}", data, content_type="image/jpeg")
                n += 1
            source = f"{n} generated frames"
        weights = weights_for(backbone, home)
        log(f"training a {backbone} bundle ({weights} weights) on {source}; cached in {target}")
        cmd = [main_python(), "-m", "training.fit", "--bucket", store.bucket, "--endpoint-url", server.endpoint_url,
               "--backbone", backbone, "--weights", weights, "--out", str(target), "--no-progress",
               "--positive", "car", "--parity-images", "8"]
        if weights == "random":
            cmd += ["--min-auc", "0.5"]
        run(cmd, env=env, timeout=1800)
    log(f"{backbone} bundle ready in {time.perf_counter() - started:.0f} s")
    return target


if __name__ == "__main__":
    import sys

    for name in sys.argv[1:] or ["mobilenet_v2", "resnet50"]:
        print(ensure_bundle(name))
