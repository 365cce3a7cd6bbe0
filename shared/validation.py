"""The one "positive number" rule, for settings, limits and command-line flags.

A positive number is an int or float above zero: not zero, not negative, not NaN, never a
bool.  Settings report a breach as a ConfigError naming the setting; flags as an argparse
error (one line, exit 2).  argparse is imported only when a flag is parsed, so the function,
which has no flags, never loads it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

from shared.errors import ConfigError

N = TypeVar("N", int, float)


def is_positive(value: object) -> bool:
    """Whether ``value`` is a number above zero (never a bool, never NaN)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return not math.isnan(value) and value > 0


def require_positive(value: N, setting: str) -> N:
    """``value`` itself, or a ConfigError saying which setting must be a positive number."""
    if not is_positive(value):
        raise ConfigError(f"Set {setting} to a positive number; it is {value}.", setting=setting)
    return value


def positive_arg(kind: Callable[[str], N]) -> Callable[[str], N]:
    """An argparse ``type=`` that parses with ``kind`` (int or float) and accepts positive numbers only."""
    def parse(text: str) -> N:
        import argparse

        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
        if not is_positive(value):
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
        return value
    return parse
