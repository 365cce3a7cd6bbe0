"""Fixtures shared by every test layer.

A single moto server (real HTTP on 127.0.0.1) is started per test session; each test
gets its own bucket, so tests stay independent without restarting the server.
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack.moto_server import DUMMY_CREDENTIALS, MotoServer
from shared.config import S3Settings
from shared.storage import ObjectStore, make_client

REPO = Path(__file__).resolve().parents[1]
KIT = REPO.parent / "shared"
_bucket_ids = itertools.count()
# The packages of each optional part (pyproject.toml's extras). A test marked with the part's name skips,
# naming what is absent, in a venv without them: make test-runtime's holds only the function's runtime.
EXTRAS = {
    "training": ("tensorflow", "keras", "tf2onnx", "onnx", "onnxmltools", "lightgbm", "sklearn", "matplotlib", "tqdm"),
    "batch": ("pyspark", "pandas", "pyarrow"),
    "ops": ("jinja2",),
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    absent = {part: [m for m in modules if importlib.util.find_spec(m) is None] for part, modules in EXTRAS.items()}
    for item in items:
        for part, missing in absent.items():
            if missing and item.get_closest_marker(part):
                item.add_marker(pytest.mark.skip(reason=f"needs the {part} extra; absent here: {', '.join(missing)}"))


@pytest.fixture(scope="session", autouse=True)
def _dummy_aws_env() -> Iterator[None]:
    # Never let a test reach real AWS with a developer's real credentials.
    saved = {k: os.environ.get(k) for k in DUMMY_CREDENTIALS}
    os.environ.update(DUMMY_CREDENTIALS)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def moto_server(_dummy_aws_env: None) -> Iterator[MotoServer]:
    with MotoServer() as server:
        yield server


@pytest.fixture(scope="session")
def s3_settings(moto_server: MotoServer) -> S3Settings:
    return S3Settings(endpoint_url=moto_server.endpoint_url, region="us-east-1")


@pytest.fixture(scope="session")
def s3_client(s3_settings: S3Settings) -> Any:  # a boto3 S3 client (boto3 is untyped)
    return make_client(s3_settings)


@pytest.fixture()
def bucket(s3_client: Any) -> str:
    name = f"test-bucket-{os.getpid()}-{next(_bucket_ids)}"
    s3_client.create_bucket(Bucket=name)
    return name


@pytest.fixture()
def store(s3_client: Any, bucket: str) -> ObjectStore:
    return ObjectStore(s3_client, bucket)


def keras_home_with_imagenet() -> Path | None:
    """A Keras cache holding MobileNetV2 ImageNet weights, or None."""
    home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
    if (home / "models" / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5").is_file():
        return home
    return None


@pytest.fixture(scope="session")
def imagenet_keras_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Writable copy of a Keras cache with ImageNet weights; skips with the reason when none exists."""
    home = keras_home_with_imagenet()
    if home is None and (KIT / "keras" / "models").is_dir():
        home = KIT / "keras"
    if home is None:
        pytest.skip("MobileNetV2 ImageNet weights are not in $KERAS_HOME/models (and ../shared/keras is absent)")
    copy = tmp_path_factory.mktemp("keras_home")
    shutil.copytree(home / "models", copy / "models")
    return copy


@pytest.fixture(scope="session")
def kit() -> Path:
    if not (KIT / "data").is_dir():
        pytest.skip("the data kit ../shared/data is absent")
    return KIT
