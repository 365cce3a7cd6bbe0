"""shared.validation: the one positive-number rule, for settings and flags."""

from __future__ import annotations

import argparse
import math

import pytest

from shared.errors import ConfigError
from shared.validation import is_positive, positive_arg, require_positive


@pytest.mark.parametrize(("value", "expected"), [
    (1, True), (0.001, True), (math.inf, True), (0, False), (-1, False), (-0.5, False), (math.nan, False),
    (True, False), ("3", False), (None, False),
])
def test_is_positive(value: object, expected: bool) -> None:
    assert is_positive(value) is expected


def test_require_positive_names_the_setting() -> None:
    assert require_positive(3, "MAX_WORKERS") == 3
    with pytest.raises(ConfigError, match=r"Set MAX_WORKERS to a positive number; it is 0\.") as caught:
        require_positive(0, "MAX_WORKERS")
    assert caught.value.context == {"setting": "MAX_WORKERS"}


def test_positive_arg_parses_and_refuses_in_one_line() -> None:
    assert positive_arg(float)("2.5") == 2.5 and positive_arg(int)("7") == 7
    for text, kind in (("0", int), ("-1", float), ("nan", float), ("x", int), ("1.5", int)):
        with pytest.raises(argparse.ArgumentTypeError, match=f"expected a positive number, got '{text}'"):
            positive_arg(kind)(text)


def test_settings_use_the_one_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared import config, validation

    seen: list[tuple[object, str]] = []

    def spy(value: object, setting: str) -> object:
        seen.append((value, setting))
        return require_positive(value, setting)  # type: ignore[type-var]

    monkeypatch.setattr(config, "require_positive", spy)
    assert config.DecodeLimits.from_env({"MAX_IMAGE_PIXELS": "7"}).max_pixels == 7
    config.VideoLimits(max_frames=9)
    assert (7, "MAX_IMAGE_PIXELS") in seen and (9, "MAX_VIDEO_FRAMES") in seen
    assert validation.require_positive is require_positive
    # So the rule's edges hold for limits too: a bool or NaN is not a positive number.
    for bad in ({"max_frames": True}, {"sample_fps": math.nan}):
        with pytest.raises(ConfigError, match="positive number"):
            config.VideoLimits(**bad)


def test_the_function_never_loads_argparse() -> None:
    import subprocess
    import sys

    code = ("import sys, shared.validation, shared.config, functions.classify; "
            "print('argparse' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr
