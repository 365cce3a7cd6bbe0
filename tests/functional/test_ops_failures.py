"""``ops failures`` with a dead-letter queue set up as the local stack sets it up (a source queue
whose RedrivePolicy names ``<queue>-dlq``), on the moto server: messages really moved there by
SQS after too many receives, and one in the shape of Lambda's asynchronous DLQ."""

from __future__ import annotations

import io
import json
import os
from typing import Any

import boto3
import pytest

from ops.cli import main
from tests.fakes import s3_event

pytestmark = pytest.mark.ops
ERRORED = "incoming/cam1/bad.jpg"
NEVER = "incoming/cam2/stuck.jpg"
ASYNC = "incoming/cam3/async.jpg"


@pytest.fixture()
def sqs(moto_server: Any) -> Any:
    return boto3.client("sqs", endpoint_url=moto_server.endpoint_url, region_name="us-east-1")


@pytest.fixture()
def queues(sqs: Any, bucket: str, store: Any) -> dict[str, str]:
    """cctv-frames-<n> with a dead-letter queue after one receive, holding three failed messages."""
    name = f"cctv-frames-{os.getpid()}-{bucket.rsplit('-', 1)[-1]}"
    dlq = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    source = sqs.create_queue(QueueName=name, Attributes={
        "VisibilityTimeout": "5", "RedrivePolicy": json.dumps({"deadLetterTargetArn": arn, "maxReceiveCount": "1"})})
    for key in (ERRORED, NEVER):
        sqs.send_message(QueueUrl=source["QueueUrl"], MessageBody=json.dumps(s3_event(bucket, [key])))
    # A worker that fails: receive without deleting, until SQS moves them to the dead-letter queue.
    for _ in range(3):
        sqs.receive_message(QueueUrl=source["QueueUrl"], MaxNumberOfMessages=10, VisibilityTimeout=0)
    sqs.send_message(QueueUrl=dlq, MessageBody=json.dumps(s3_event(bucket, [ASYNC])), MessageAttributes={
        "ErrorCode": {"DataType": "Number", "StringValue": "200"},
        "ErrorMessage": {"DataType": "String", "StringValue": "Task timed out after 30.00 seconds"}})
    store.put_json("results/cam1/bad.jpg.json", {"status": "error", "error": {
        "type": "NotAnImageError", "message": "'incoming/cam1/bad.jpg' is not an image Pillow can read."}})
    return {"name": name, "source": source["QueueUrl"], "dlq": dlq}


def depth(sqs: Any, url: str) -> int:
    attrs = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"])


def run(moto_server: Any, bucket: str, *args: str) -> tuple[int, str]:
    out = io.StringIO()
    code = main(["failures", *args, "--bucket", bucket, "--endpoint-url", moto_server.endpoint_url,
                 "--region", "us-east-1", "--no-cache"], out=out)
    return code, out.getvalue()


def test_failures_lists_objects_and_why_without_consuming(moto_server: Any, bucket: str, sqs: Any,
                                                          queues: dict[str, str]) -> None:
    assert depth(sqs, queues["dlq"]) == 3 and depth(sqs, queues["source"]) == 0
    code, text = run(moto_server, bucket, "--queue", queues["name"], "--json")
    assert code == 0
    report = json.loads(text)
    assert report["dlq"] == queues["dlq"] and report["source_queue"] == queues["source"]
    by_key = {m["objects"][0]["key"]: m for m in report["messages"]}
    assert set(by_key) == {ERRORED, NEVER, ASYNC}
    assert by_key[ERRORED]["result"].startswith("error result: NotAnImageError")
    assert by_key[NEVER]["result"] == "no result"
    assert by_key[ASYNC]["reason"] == "200: Task timed out after 30.00 seconds"
    assert all(not m["redriven"] for m in report["messages"])
    assert depth(sqs, queues["dlq"]) == 3  # released at once, not consumed


def test_failures_table_by_dlq_url(moto_server: Any, bucket: str, queues: dict[str, str]) -> None:
    code, text = run(moto_server, bucket, "--dlq", queues["dlq"])
    assert code == 0
    assert text.splitlines()[0].split()[:3] == ["message", "receives", "objects"]
    assert NEVER in text and "no result" in text and "Task timed out" in text
    assert text.rstrip().endswith(f"3 message(s) in {queues['dlq']}")


def test_redrive_sends_them_back_to_the_source_queue(moto_server: Any, bucket: str, sqs: Any,
                                                     queues: dict[str, str]) -> None:
    code, text = run(moto_server, bucket, "--queue", queues["source"], "--redrive")
    assert code == 0 and f"3 sent back to {queues['source']}" in text
    assert depth(sqs, queues["dlq"]) == 0
    got = sqs.receive_message(QueueUrl=queues["source"], MaxNumberOfMessages=10)["Messages"]
    keys = {json.loads(m["Body"])["Records"][0]["s3"]["object"]["key"] for m in got}
    assert keys == {"incoming/cam1/bad.jpg", "incoming/cam2/stuck.jpg", "incoming/cam3/async.jpg"}


def test_redrive_without_a_known_source_queue_is_refused(moto_server: Any, bucket: str, sqs: Any,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    lonely = sqs.create_queue(QueueName=f"lonely-dlq-{bucket}")["QueueUrl"]
    sqs.send_message(QueueUrl=lonely, MessageBody="not json at all")
    code, _ = run(moto_server, bucket, "--dlq", lonely, "--redrive")
    assert code == 2 and "Cannot redrive" in capsys.readouterr().err
    assert depth(sqs, lonely) == 1  # still there, visible again
    code, text = run(moto_server, bucket, "--dlq", lonely, "--json")
    assert json.loads(text)["messages"][0]["parse_error"]


def test_no_queue_is_one_line(moto_server: Any, bucket: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = run(moto_server, bucket)
    assert code == 2 and "No queue given" in capsys.readouterr().err
