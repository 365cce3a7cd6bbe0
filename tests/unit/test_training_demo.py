"""The local stack never keeps serving a smoke bundle once real weights can be had."""

from __future__ import annotations

from pathlib import Path

import pytest

from devstack import demo
from devstack.stack import should_retrain
from shared.bundle import Manifest
from shared.errors import WeightsNotFoundError


def _manifest(source: str) -> Manifest:
    return Manifest({"version": "v", "classes": ["bus", "car"], "files": {},
                     "backbone": {"name": "mobilenet_v2", "input_size": [224, 224], "weights": {"source": source}}})


def test_a_smoke_bundle_is_retrained_once_real_weights_are_available() -> None:
    assert should_retrain(_manifest("random"), lambda: True) is True
    assert should_retrain(_manifest("random"), lambda: False) is False


def test_a_real_bundle_is_reused_without_looking_for_weights() -> None:
    def never() -> bool:
        raise AssertionError("a real bundle needs no weights check")

    assert should_retrain(_manifest("imagenet"), never) is False


def test_demo_says_in_one_line_how_to_get_real_weights(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    def missing(*args: object, **kwargs: object) -> None:
        raise WeightsNotFoundError("not here", path=str(tmp_path / "models" / "mobilenet_v2_no_top.h5"))

    monkeypatch.setattr(demo, "resolve_weights", missing)
    assert demo.choose_weights("mobilenet_v2", {"KERAS_HOME": str(tmp_path)}) == "random"
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == 1
    assert "network access" in lines[0] and "KERAS_HOME" in lines[0] and "mobilenet_v2_no_top.h5" in lines[0]
