"""The wall clock, injected wherever a time is written into a document (results, manifests).

Durations are measured with ``time.perf_counter`` directly; this is only for timestamps.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def iso_utc(moment: datetime, *, timespec: str = "milliseconds") -> str:
    """ISO 8601 in UTC with a ``Z``; a naive datetime is taken to be UTC already.

    ``timespec`` as ``datetime.isoformat``'s: documents keep milliseconds, ops' tables "seconds".
    """
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat(timespec=timespec).replace("+00:00", "Z")


def parse_time(value: object) -> datetime | None:
    """A time as result documents, listings and flags write it, in UTC: ISO 8601 with ``Z`` or an offset
    (a naive one is taken to be UTC), or a datetime.  None for None, "" or text that is not such a time."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value).strip().replace("Z", "+00:00"))
        except ValueError:
            return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)
