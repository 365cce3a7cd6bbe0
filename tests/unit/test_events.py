"""The event parser against the documented shape of every source it accepts."""

from __future__ import annotations

import dataclasses
import json

import pytest

from functions.events import ObjectRef, SourceKind, parse_event
from shared.errors import UnsupportedEventError
from tests.fakes import load_event

# The key in every file under tests/events/: a space, '+', '%' and non-ASCII letters.
KEY = "incoming/cam 1/frame+1 100%/Ünïcode-ключ.jpg"
BUCKET = "cctv-frames"


def test_s3_notification_key_is_url_decoded() -> None:
    event = load_event("s3_put")
    assert "+" in event["Records"][0]["s3"]["object"]["key"]  # encoded as S3 sends it
    parsed = parse_event(event)
    assert parsed.source is SourceKind.S3
    assert parsed.refs == (ObjectRef(BUCKET, KEY, "d41d8cd98f00b204e9800998ecf8427e", 1024,
                                     "096fKKXTRTtl3on89fVO.nfljtsv6qko", None),)
    assert parsed.bad == () and parsed.ignored == ()


def test_s3_removal_is_ignored_with_a_reason() -> None:
    parsed = parse_event(load_event("s3_delete"))
    assert parsed.refs == ()
    assert len(parsed.ignored) == 1 and "ObjectRemoved:Delete" in parsed.ignored[0] and KEY in parsed.ignored[0]


def test_s3_through_sqs_keeps_message_id_and_decodes_key() -> None:
    parsed = parse_event(load_event("sqs_s3_put"))
    assert parsed.source is SourceKind.SQS
    (ref,) = parsed.refs
    assert (ref.bucket, ref.key, ref.etag) == (BUCKET, KEY, "d41d8cd98f00b204e9800998ecf8427e")
    assert ref.message_id == "059f36b4-87a3-44ab-83d2-661975830a7d"


def test_sqs_s3_test_event_is_ignored() -> None:
    parsed = parse_event(load_event("sqs_s3_test_event"))
    assert parsed.source is SourceKind.SQS
    assert parsed.refs == () and parsed.bad == ()
    assert parsed.ignored and "s3:TestEvent" in parsed.ignored[0]


def test_malformed_sqs_message_is_reported_without_sinking_the_batch() -> None:
    parsed = parse_event(load_event("sqs_mixed_batch"))
    assert [ref.key for ref in parsed.refs] == [KEY]
    assert len(parsed.ignored) == 1
    (bad,) = parsed.bad
    assert bad.item_id == "7b9f1c2e-0d3a-4c5b-9e8f-1a2b3c4d5e6f"
    assert "not JSON" in bad.reason


@pytest.mark.parametrize("body", [json.dumps({"hello": "world"}), json.dumps([1, 2]), json.dumps(
    {"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {}}}]})])
def test_sqs_body_of_the_wrong_shape_is_a_bad_message(body: str) -> None:
    event = load_event("sqs_s3_put")
    event["Records"][0]["body"] = body
    parsed = parse_event(event)
    assert parsed.refs == ()
    assert [b.item_id for b in parsed.bad] == ["059f36b4-87a3-44ab-83d2-661975830a7d"]


def test_sns_envelope_inside_sqs_is_unwrapped() -> None:
    event = load_event("sqs_s3_put")
    s3 = event["Records"][0]["body"]
    event["Records"][0]["body"] = json.dumps({"Type": "Notification", "MessageId": "m", "Message": s3})
    assert [ref.key for ref in parse_event(event).refs] == [KEY]


def test_eventbridge_key_is_not_decoded() -> None:
    event = load_event("eventbridge_object_created")
    parsed = parse_event(event)
    assert parsed.source is SourceKind.EVENTBRIDGE
    (ref,) = parsed.refs
    assert ref == ObjectRef(BUCKET, KEY, "b1946ac92492d2347c6235b4d2611184", 1024,
                            "IYV3p45BT0ac8hjHg1houSdS1a.Mro8e", None)
    # A literal '%41' in an EventBridge key must survive as is (no unquoting).
    event["detail"]["object"]["key"] = "incoming/a%41+b.jpg"
    assert parse_event(event).refs[0].key == "incoming/a%41+b.jpg"


def test_eventbridge_inside_sqs() -> None:
    event = load_event("sqs_s3_put")
    event["Records"][0]["body"] = json.dumps(load_event("eventbridge_object_created"))
    (ref,) = parse_event(event).refs
    assert ref.key == KEY and ref.message_id == "059f36b4-87a3-44ab-83d2-661975830a7d"


def test_eventbridge_other_detail_type_is_ignored_and_other_source_refused() -> None:
    event = load_event("eventbridge_object_created")
    event["detail-type"] = "Object Deleted"
    parsed = parse_event(event)
    assert parsed.refs == () and "Object Deleted" in parsed.ignored[0]
    event["source"] = "aws.ec2"
    with pytest.raises(UnsupportedEventError, match="aws.s3"):
        parse_event(event)


def test_yandex_trigger_message() -> None:
    parsed = parse_event(load_event("yandex_object_create"))
    assert parsed.source is SourceKind.YANDEX
    assert parsed.refs == (ObjectRef(BUCKET, KEY),)  # no ETag or size in Yandex messages


def test_yandex_batch_with_delete_and_broken_message() -> None:
    event = load_event("yandex_object_create")
    deleted = json.loads(json.dumps(event["messages"][0]))
    deleted["event_metadata"]["event_type"] = "yandex.cloud.events.storage.ObjectDelete"
    event["messages"] += [deleted, {"event_metadata": {}, "details": {"bucket_id": BUCKET}}]
    parsed = parse_event(event)
    assert [ref.key for ref in parsed.refs] == [KEY]
    assert "ObjectDelete" in parsed.ignored[0]
    assert [b.item_id for b in parsed.bad] == ["messages[2]"]


@pytest.mark.parametrize("event", [{}, {"foo": 1}, [], "Records", {"Records": "x"}])
def test_unknown_shape_is_a_clear_error(event: object) -> None:
    with pytest.raises(UnsupportedEventError) as info:
        parse_event(event)
    message = str(info.value)
    assert "S3" in message and "EventBridge" in message and "Yandex" in message
    assert info.value.retryable is False


def test_direct_s3_test_event_is_ignored() -> None:
    parsed = parse_event({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": BUCKET})
    assert parsed.refs == () and parsed.ignored


def test_multiple_s3_records_keep_order_and_quotes_are_stripped() -> None:
    event = load_event("s3_put")
    second = json.loads(json.dumps(event["Records"][0]))
    second["s3"]["object"].update(key="incoming/b.jpg", eTag='"abc"')
    event["Records"].append(second)
    parsed = parse_event(event)
    assert [r.key for r in parsed.refs] == [KEY, "incoming/b.jpg"]
    assert parsed.refs[1].etag == "abc"


def test_object_ref_is_frozen() -> None:
    ref = ObjectRef("b", "k")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ref.key = "other"  # type: ignore[misc]  # the assignment mypy refuses is what is tested
