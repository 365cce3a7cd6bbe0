"""Fetch missing ImageNet weights with Keras' own downloader, into ``$KERAS_HOME/models``.

``keras.utils.get_file`` downloads from the URL Keras builds for each application (its
module's base URL plus the file name) and checks the hash Keras publishes for the file
where it publishes one (ResNet50; Keras publishes none for MobileNetV2, whose file is then
identified by its sha256 in the manifest, as every weights file is).  It runs in a child
process: importing Keras starts TensorFlow, whose start-up chatter must not reach the
user's terminal, and a failure (no network, a wrong hash) comes back as one sentence.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from shared.backbones import BackboneSpec
from shared.errors import WeightsDownloadError

TIMEOUT_S = 600
# Where each Keras application keeps its download base URL and (if any) its published hashes.
SOURCES = {
    "MobileNetV2": ("keras.src.applications.mobilenet_v2", "BASE_WEIGHT_PATH", None),
    "ResNet50": ("keras.src.applications.resnet", "BASE_WEIGHTS_PATH", "resnet50"),
}

_CHILD = r"""
import json, os, socket, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
socket.setdefaulttimeout(60)
req = json.loads(sys.argv[1])
target = os.path.join(req["home"], "models", req["file"])
try:
    import importlib
    module = importlib.import_module(req["module"])
    base = req["base_url"] or getattr(module, req["base_attr"])
    file_hash = None
    if req["hash_key"]:
        file_hash = module.WEIGHTS_HASHES[req["hash_key"]][0 if req["include_top"] else 1]
    from keras.utils import get_file
    path = get_file(req["file"], base + req["file"], cache_dir=req["home"], cache_subdir="models",
                    file_hash=file_hash)
    index = os.path.join(req["home"], "models", "imagenet_class_index.json")
    if not os.path.isfile(index):  # the names of the 1,000 classes, for the results' ImageNet top-3
        from keras.src.applications import imagenet_utils
        origin = (req["base_url"] + "imagenet_class_index.json") if req["base_url"] else imagenet_utils.CLASS_INDEX_PATH
        try:
            get_file("imagenet_class_index.json", origin, cache_dir=req["home"], cache_subdir="models",
                     file_hash="c2c37ea517e94d9795004a39431a14cb")
        except Exception:
            pass  # optional: the bundle then reports no ImageNet top-3, and training says so
    print(json.dumps({"path": path, "origin": base + req["file"], "hash_checked": file_hash is not None}))
except BaseException as exc:
    # get_file leaves a file that failed its hash check in place; the cache must never keep one.
    if os.path.isfile(target):
        os.remove(target)
    print(json.dumps({"error": f"{type(exc).__name__}: {exc}".strip()[:300]}))
"""


def download(spec: BackboneSpec, home: Path, *, include_top: bool = True, base_url: str | None = None,
             python: str = sys.executable, timeout: float = TIMEOUT_S) -> tuple[Path, bool]:
    """Download ``spec``'s ImageNet weights into ``home/models``; return the path and whether a hash was checked.

    ``base_url`` replaces the base URL Keras would use (a mirror, or a test server).
    """
    try:
        module, attr, hash_key = SOURCES[spec.keras_application]
    except KeyError:
        raise WeightsDownloadError(f"no download source is known for {spec.keras_application}") from None
    name = spec.weights_file_top if include_top else spec.weights_file_notop
    request = {"module": module, "base_attr": attr, "hash_key": hash_key, "include_top": include_top,
               "file": name, "home": str(home), "base_url": base_url}
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", KERAS_HOME=str(home))
    try:
        proc = subprocess.run([python, "-c", _CHILD, json.dumps(request)], capture_output=True, text=True,
                              timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise WeightsDownloadError(f"the download took longer than {timeout:.0f} s") from None
    answer = _last_json(proc.stdout)
    if answer is None or "error" in answer:
        why = (answer or {}).get("error") or (proc.stderr.strip().splitlines() or ["no answer"])[-1]
        raise WeightsDownloadError(why.rstrip("."))
    return Path(answer["path"]), bool(answer["hash_checked"])


def _last_json(stdout: str) -> dict[str, str] | None:
    for line in reversed(stdout.strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None
