"""shared.clock: the wall clock's helpers (iso_utc, and parse_time for what documents and flags carry)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from shared.clock import iso_utc, parse_time

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


@pytest.mark.parametrize("text", ["2026-01-01T00:00:00.000Z", "2026-01-01T00:00:00Z", "2026-01-01T00:00:00",
                                  "2026-01-01", " 2026-01-01T01:00:00+01:00 ", "2025-12-31T19:00:00-05:00"])
def test_iso_times_are_read_in_utc(text: str) -> None:
    moment = parse_time(text)
    assert moment == T0 and moment is not None and moment.utcoffset() == timedelta(0)


def test_a_datetime_is_taken_as_it_is_and_a_naive_one_as_utc() -> None:
    assert parse_time(T0) == T0
    assert parse_time(datetime(2026, 1, 1)) == T0
    assert parse_time(datetime(2026, 1, 1, 1, tzinfo=timezone(timedelta(hours=1)))) == T0


@pytest.mark.parametrize("value", [None, "", "yesterday", "2026-13-01"])
def test_nothing_or_not_a_time_is_none(value: object) -> None:
    assert parse_time(value) is None


def test_parse_time_reads_what_iso_utc_writes() -> None:
    moment = datetime(2026, 11, 21, 18, 23, 40, 123000, tzinfo=timezone.utc)
    assert parse_time(iso_utc(moment)) == moment
