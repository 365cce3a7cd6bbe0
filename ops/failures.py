"""``ops failures``: what sits in the failure (dead-letter) queue, and ``--redrive``.

Messages are received with a visibility timeout and released again at the end (visibility
0), so looking never consumes them.  Why a message failed comes from the message when it
says so (Lambda's asynchronous DLQ adds ``ErrorCode``/``ErrorMessage`` attributes) and
from the object's result, if any.  ``--redrive`` sends each body back to the source queue
(the local stack and SQS-fed deployments) and deletes it from the dead-letter queue only
once the send succeeded.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

from shared.errors import CCTVError, ConfigError, ObjectNotFoundError, StorageError
from shared.storage import ObjectStore

SQS_BATCH = 10


@dataclasses.dataclass
class FailedMessage:
    message_id: str
    receipt: str
    body: str
    receive_count: int
    sent_at: str | None
    objects: list[tuple[str, str]]
    reason: str | None = None
    result: str | None = None
    parse_error: str | None = None
    redriven: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"message_id": self.message_id, "objects": [{"bucket": b, "key": k} for b, k in self.objects],
                "reason": self.reason, "result": self.result, "receive_count": self.receive_count,
                "sent_at": self.sent_at, "parse_error": self.parse_error, "redriven": self.redriven}


def sqs_client(endpoint_url: str | None, region: str | None, credentials: dict[str, str] | None = None) -> Any:
    import boto3

    return boto3.client("sqs", endpoint_url=endpoint_url, region_name=region or "us-east-1", **(credentials or {}))


def queue_url(sqs: Any, name_or_url: str) -> str:
    if name_or_url.startswith(("http://", "https://")):
        return name_or_url
    try:
        return str(sqs.get_queue_url(QueueName=name_or_url)["QueueUrl"])
    except sqs.exceptions.QueueDoesNotExist:
        raise ConfigError(f"There is no queue named {name_or_url!r}; pass its name or URL with --queue/--dlq.") \
            from None


def resolve_queues(sqs: Any, queue: str | None, dlq: str | None) -> tuple[str | None, str]:
    """(source queue URL or None, dead-letter queue URL)."""
    if not queue and not dlq:
        raise ConfigError("No queue given; pass --queue NAME|URL (its RedrivePolicy names the dead-letter queue) "
                          "or --dlq NAME|URL (env QUEUE_URL, DLQ_URL).")
    source = queue_url(sqs, queue) if queue else None
    if dlq:
        dlq_url = queue_url(sqs, dlq)
        if source is None:
            found = sqs.list_dead_letter_source_queues(QueueUrl=dlq_url).get("queueUrls", [])
            source = found[0] if len(found) == 1 else None
        return source, dlq_url
    assert source is not None
    attrs = sqs.get_queue_attributes(QueueUrl=source, AttributeNames=["RedrivePolicy"]).get("Attributes", {})
    if "RedrivePolicy" not in attrs:
        raise ConfigError(f"The queue {source} has no dead-letter queue (no RedrivePolicy); pass --dlq.")
    arn = json.loads(attrs["RedrivePolicy"])["deadLetterTargetArn"]
    return source, queue_url(sqs, arn.rsplit(":", 1)[-1])


def _objects(body: str) -> tuple[list[tuple[str, str]], str | None]:
    from functions.events import parse_event

    try:
        event = json.loads(body)
    except ValueError as exc:
        return [], f"the body is not JSON ({exc}): not an event this function takes"
    try:
        parsed = parse_event(event)
    except CCTVError as exc:
        return [], str(exc)[:300]
    return [(ref.bucket, ref.key) for ref in parsed.refs], None


def _message(raw: dict[str, Any]) -> FailedMessage:
    attrs = raw.get("MessageAttributes", {})
    code = attrs.get("ErrorCode", {}).get("StringValue")
    text = attrs.get("ErrorMessage", {}).get("StringValue")
    objects, problem = _objects(raw["Body"])
    reason = ": ".join(x for x in (code, text) if x) or None
    sys_attrs = raw.get("Attributes", {})
    return FailedMessage(raw["MessageId"], raw["ReceiptHandle"], raw["Body"],
                         int(sys_attrs.get("ApproximateReceiveCount", 0)), sys_attrs.get("SentTimestamp"),
                         objects, reason=reason, parse_error=problem)


def peek(sqs: Any, dlq_url: str, *, visibility: int = 30, limit: int = 100) -> list[FailedMessage]:
    """Receive up to ``limit`` messages; they stay hidden until :func:`release`."""
    seen: dict[str, FailedMessage] = {}
    while len(seen) < limit:
        resp = sqs.receive_message(QueueUrl=dlq_url, MaxNumberOfMessages=min(SQS_BATCH, limit - len(seen)),
                                   VisibilityTimeout=visibility, WaitTimeSeconds=0,
                                   AttributeNames=["All"], MessageAttributeNames=["All"])
        batch = resp.get("Messages", [])
        if not batch:
            break
        for raw in batch:
            seen.setdefault(raw["MessageId"], _message(raw))
    return list(seen.values())


def _chunks(items: list[FailedMessage]) -> Iterator[list[FailedMessage]]:
    for i in range(0, len(items), SQS_BATCH):
        yield items[i:i + SQS_BATCH]


def release(sqs: Any, dlq_url: str, messages: list[FailedMessage]) -> None:
    """Make the messages visible again at once (they return to the queue, unconsumed)."""
    for chunk in _chunks([m for m in messages if not m.redriven]):
        sqs.change_message_visibility_batch(QueueUrl=dlq_url, Entries=[
            {"Id": str(i), "ReceiptHandle": m.receipt, "VisibilityTimeout": 0} for i, m in enumerate(chunk)])


def redrive(sqs: Any, dlq_url: str, source_url: str, messages: list[FailedMessage]) -> int:
    """Send each body back to the source queue; delete it from the DLQ only once that worked."""
    moved = 0
    for chunk in _chunks(messages):
        sent = sqs.send_message_batch(QueueUrl=source_url, Entries=[
            {"Id": str(i), "MessageBody": m.body} for i, m in enumerate(chunk)])
        ok = {int(e["Id"]) for e in sent.get("Successful", [])}
        done = [m for i, m in enumerate(chunk) if i in ok]
        if done:
            sqs.delete_message_batch(QueueUrl=dlq_url, Entries=[
                {"Id": str(i), "ReceiptHandle": m.receipt} for i, m in enumerate(done)])
        for m in done:
            m.redriven = True
        moved += len(done)
    return moved


def explain(messages: list[FailedMessage], stores: Any, result_key: Any) -> None:
    """Fill in what each object's result says (none yet, an error, or ok since)."""
    for m in messages:
        notes = []
        for bucket, key in m.objects:
            rk = result_key(key)
            if rk is None:
                notes.append("outside the input prefix")
                continue
            notes.append(_result_note(stores(bucket), rk))
        m.result = "; ".join(notes) or None


def _result_note(store: ObjectStore, result_key: str) -> str:
    try:
        doc = store.get_json(result_key)
    except ObjectNotFoundError:
        return "no result"
    except (StorageError, ValueError) as exc:
        return f"result unreadable ({exc})"
    if doc.get("status") == "error":
        error = doc.get("error") or {}
        return f"error result: {error.get('type')}: {error.get('message')}"
    return f"{doc.get('status')} result written {doc.get('processed_at')}"
