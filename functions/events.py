"""The one place that knows what the platforms' events look like.

Shapes understood:

* S3 event notifications (``Records[].s3``), keys URL-encoded with ``+`` for spaces;
* the same notifications delivered through SQS (``Records[].body`` is the S3 event as
  a JSON string; an SNS envelope around it is unwrapped; ``s3:TestEvent`` is ignored);
* EventBridge "Object Created" events from ``aws.s3`` (keys are NOT encoded), directly
  or inside SQS;
* Yandex Cloud Object Storage trigger messages (``messages[].details``; keys not encoded).

Everything else is refused with :class:`shared.errors.UnsupportedEventError`.  Inside a batch, an item
that cannot be read is returned as a :class:`BadMessage` instead, so it never sinks
the good items next to it.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote_plus

from shared.errors import UnsupportedEventError

S3_TEST_EVENT = "s3:TestEvent"
EVENTBRIDGE_CREATED = "Object Created"
YANDEX_CREATED = "yandex.cloud.events.storage.ObjectCreate"
# Keys with these extensions (any case) are clips for video mode; everything else is a frame.
VIDEO_EXTENSIONS = frozenset({".mp4", ".avi", ".mov", ".mkv"})


class SourceKind(str, enum.Enum):
    S3 = "s3"
    SQS = "sqs"
    EVENTBRIDGE = "eventbridge"
    YANDEX = "yandex"


def is_video_key(key: str) -> bool:
    """Whether an object key names a clip for video mode (by extension, any case).

    A folder marker (``clips.mp4/``) and a bare ``.mp4`` are not clips.  It lives here,
    not in :mod:`functions.video`, so routing a frame never imports the video code.
    """
    stem, dot, ext = key.rsplit("/", 1)[-1].rpartition(".")
    return bool(stem and dot) and f".{ext.lower()}" in VIDEO_EXTENSIONS


@dataclasses.dataclass(frozen=True)
class ObjectRef:
    """One object an event says was created. ``key`` is always decoded."""

    bucket: str
    key: str
    etag: str | None = None
    size: int | None = None
    version_id: str | None = None
    # The SQS messageId that carried it: what batchItemFailures must name.
    message_id: str | None = None


@dataclasses.dataclass(frozen=True)
class BadMessage:
    """An item of a batch that could not be read; ``item_id`` is its messageId or position."""

    item_id: str
    reason: str


@dataclasses.dataclass(frozen=True)
class ParsedEvent:
    source: SourceKind
    refs: tuple[ObjectRef, ...] = ()
    bad: tuple[BadMessage, ...] = ()
    # Why each notification that needs no work was skipped (test events, deletions...).
    ignored: tuple[str, ...] = ()


class _Collector:
    """Accumulates the outcome of parsing one event."""

    def __init__(self) -> None:
        self.refs: list[ObjectRef] = []
        self.bad: list[BadMessage] = []
        self.ignored: list[str] = []

    def result(self, source: SourceKind) -> ParsedEvent:
        return ParsedEvent(source, tuple(self.refs), tuple(self.bad), tuple(self.ignored))


def parse_event(event: Any) -> ParsedEvent:
    """Turn a raw platform event into typed object references; raise on an unknown shape."""
    if not isinstance(event, Mapping):
        raise UnsupportedEventError(
            f"The event is a {type(event).__name__}, not a JSON object; invoke the function from an "
            "S3, SQS, EventBridge or Yandex Object Storage trigger.")
    if isinstance(event.get("messages"), list):
        return _parse_yandex(event["messages"])
    if "detail-type" in event:
        out = _Collector()
        _eventbridge(event, None, out)
        return out.result(SourceKind.EVENTBRIDGE)
    records = event.get("Records")
    if isinstance(records, list):
        return _parse_records(records)
    if event.get("Event") == S3_TEST_EVENT:
        return ParsedEvent(SourceKind.S3, ignored=(f"{S3_TEST_EVENT} for bucket {event.get('Bucket')!r}",))
    raise UnsupportedEventError(
        f"The event has none of 'Records', 'detail-type' or 'messages' (its keys are "
        f"{sorted(map(str, event))[:10]}); wire the function to S3 notifications, an SQS queue fed by "
        "them, an EventBridge 'Object Created' rule or a Yandex Object Storage trigger.")


def _parse_records(records: list[Any]) -> ParsedEvent:
    out = _Collector()
    is_sqs = any(isinstance(r, Mapping) and r.get("eventSource") == "aws:sqs" for r in records)
    for index, record in enumerate(records):
        item_id = _sqs_message_id(record) or f"Records[{index}]"
        try:
            if is_sqs:
                _sqs_message(record, item_id, out)
            else:
                _s3_record(record, None, out)
        except UnsupportedEventError as exc:
            out.bad.append(BadMessage(item_id, exc.message))
    return out.result(SourceKind.SQS if is_sqs else SourceKind.S3)


def _sqs_message_id(record: Any) -> str | None:
    if isinstance(record, Mapping) and isinstance(record.get("messageId"), str):
        return str(record["messageId"])
    return None


def _sqs_message(record: Any, message_id: str, out: _Collector) -> None:
    body = _json_body(record.get("body") if isinstance(record, Mapping) else None, message_id)
    # S3 -> SNS -> SQS fan-out wraps the notification once more.
    if body.get("Type") == "Notification" and isinstance(body.get("Message"), str):
        body = _json_body(body["Message"], message_id)
    if body.get("Event") == S3_TEST_EVENT:
        out.ignored.append(f"{S3_TEST_EVENT} in SQS message {message_id}")
    elif isinstance(body.get("Records"), list):
        for s3_record in body["Records"]:
            _s3_record(s3_record, message_id, out)
    elif "detail-type" in body:
        _eventbridge(body, message_id, out)
    else:
        raise UnsupportedEventError(
            f"SQS message {message_id} holds JSON that is neither an S3 notification nor an EventBridge "
            "event; check what feeds the queue.")


def _json_body(raw: Any, message_id: str) -> Mapping[str, Any]:
    try:
        body = json.loads(raw)
    except (TypeError, ValueError):
        raise UnsupportedEventError(
            f"SQS message {message_id} has a body that is not JSON; only S3 event notifications "
            "should be sent to this queue.") from None
    if not isinstance(body, Mapping):
        raise UnsupportedEventError(f"SQS message {message_id} has a JSON body that is not an object.")
    return body


def _s3_record(record: Any, message_id: str | None, out: _Collector) -> None:
    try:
        name = str(record.get("eventName", ""))
        s3 = record["s3"]
        bucket = _text(s3["bucket"]["name"])
        obj = s3["object"]
        # S3 notifications URL-encode keys, with '+' for a space.
        key = unquote_plus(_text(obj["key"]))
    except (KeyError, TypeError, AttributeError, ValueError):
        raise UnsupportedEventError(
            "An S3 notification record lacks s3.bucket.name or s3.object.key; it is not an S3 event "
            "notification.") from None
    if not name.startswith("ObjectCreated:"):
        out.ignored.append(f"{name or 'an event without eventName'} for s3://{bucket}/{key}")
        return
    out.refs.append(ObjectRef(bucket, key, _etag(obj.get("eTag")), _size(obj.get("size")),
                              obj.get("versionId"), message_id))


def _eventbridge(event: Mapping[str, Any], message_id: str | None, out: _Collector) -> None:
    if event.get("source") != "aws.s3":
        raise UnsupportedEventError(
            f"The EventBridge event comes from {event.get('source')!r}, not 'aws.s3'; narrow the rule "
            "to source aws.s3 and detail-type 'Object Created'.")
    try:
        detail = event["detail"]
        bucket = _text(detail["bucket"]["name"])
        obj = detail["object"]
        key = _text(obj["key"])  # EventBridge keys are not URL-encoded.
    except (KeyError, TypeError, ValueError):
        raise UnsupportedEventError(
            "The EventBridge event lacks detail.bucket.name or detail.object.key.") from None
    if event.get("detail-type") != EVENTBRIDGE_CREATED:
        out.ignored.append(f"EventBridge {event.get('detail-type')!r} for s3://{bucket}/{key}")
        return
    out.refs.append(ObjectRef(bucket, key, _etag(obj.get("etag")), _size(obj.get("size")),
                              obj.get("version-id"), message_id))


def _parse_yandex(messages: list[Any]) -> ParsedEvent:
    out = _Collector()
    for index, message in enumerate(messages):
        try:
            meta = message.get("event_metadata") or {}
            event_type = str(meta.get("event_type", ""))
            details = message["details"]
            bucket, key = _text(details["bucket_id"]), _text(details["object_id"])
        except (KeyError, TypeError, AttributeError, ValueError):
            out.bad.append(BadMessage(f"messages[{index}]", "The Yandex trigger message lacks "
                                      "details.bucket_id or details.object_id."))
            continue
        if event_type != YANDEX_CREATED:
            out.ignored.append(f"{event_type or 'an event without event_type'} for s3://{bucket}/{key}")
            continue
        out.refs.append(ObjectRef(bucket, key))  # Yandex gives neither ETag nor size.
    return out.result(SourceKind.YANDEX)


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("expected a non-empty string")
    return value


def _etag(value: Any) -> str | None:
    return value.strip('"') if isinstance(value, str) and value.strip('"') else None


def _size(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None
