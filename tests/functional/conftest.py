"""Fixtures shared by the handler's functional tests (each module defines its own ``settings``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from functions import classify
from shared.config import FunctionSettings
from shared.storage import ObjectStore
from tests.fakes import CountingLoader, TickingClock, build_tiny_bundle, publish_bundle


@pytest.fixture()
def model(store: ObjectStore, tmp_path: Path) -> str:
    """A tiny bundle, published as the latest model; its version."""
    build_tiny_bundle(tmp_path / "bundle")
    return publish_bundle(store, tmp_path / "bundle")


@pytest.fixture()
def app(settings: FunctionSettings, s3_client: Any, model: str) -> classify.App:
    return classify.App(settings, stores=lambda b: ObjectStore(s3_client, b),
                        loader=CountingLoader(settings), clock=TickingClock())
