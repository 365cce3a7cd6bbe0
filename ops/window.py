"""The time flags every command reads the same way: ``--since``/``--until`` windows and ``--older-than``."""

from __future__ import annotations

import argparse
from datetime import datetime, timedelta

from ops.records import parse_duration
from shared.clock import parse_time
from shared.errors import ConfigError


def window(text: str | None, now: datetime, flag: str) -> datetime | None:
    """``--since 24h`` (a duration back from now) or an ISO time."""
    if not text:
        return None
    try:
        return now - parse_duration(text)
    except ValueError:
        moment = parse_time(text)
        if moment is None:
            raise ConfigError(f"{flag} {text!r} is neither a duration (24h, 7d) nor an ISO time.") from None
        return moment


def duration(text: str, flag: str) -> timedelta:
    """A duration flag's value (``--older-than 10m``), or a ConfigError naming the flag."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise ConfigError(f"{flag}: {exc}.") from None


def since(args: argparse.Namespace, now: datetime) -> datetime | None:
    """The start of the window from ``--since`` (None without one, or for ``all``)."""
    value = getattr(args, "since", None)
    return None if value in (None, "all") else window(value, now, "--since")
