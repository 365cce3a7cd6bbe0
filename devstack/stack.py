"""The whole system on one machine: what ``python -m devstack`` (``make demo``) runs.

1. a moto server (S3 + SQS) on a free 127.0.0.1 port;
2. the bucket, a queue (with a dead-letter queue) and a bucket notification that sends
   ``incoming/`` ObjectCreated events to the queue, as on AWS;
3. a model bundle: reused from ``build/local-bundle`` when valid, else trained with
   ``python -m training.fit`` in a child process (TensorFlow never enters this process);
4. a worker that long-polls the queue and calls the real handler with the real message
   bodies, deleting only what the handler did not name in ``batchItemFailures``;
5. sample frames and one short clip uploaded to ``incoming/``, and their results printed
   as they appear (the clip's annotated copy lands next to its JSON under ``results/``).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from devstack.moto_server import DUMMY_CREDENTIALS, MotoServer
from shared import bundle
from shared.config import DecodeLimits, FunctionSettings, S3Settings, VideoLimits
from shared.errors import BundleError, LocalStackError
from shared.storage import ObjectStore, make_client

REPO = Path(__file__).resolve().parents[1]
BUCKET = "cctv-local"
QUEUE = "cctv-frames"
# Where the demo keeps its trained bundle between runs (and what `python -m functions.video --bundle` can use).
DEFAULT_BUNDLE = REPO / "build" / "local-bundle"
REGION = "us-east-1"
StoreFactory = Callable[[str], ObjectStore]
Handler = Callable[[Any, Any], dict[str, Any]]


@contextlib.contextmanager
def scoped_environ(values: Mapping[str, str]) -> Iterator[None]:
    """Set ``values`` in os.environ for the block only, restoring what was there after.

    make_client takes its credentials from the default chain, which it resolves when the
    client is built; the local stack only ever talks to moto, so dummy credentials are set
    for that moment alone and real ones are never sent anywhere.
    """
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def moto_clients(endpoint_url: str, *, max_pool_connections: int = 32) -> tuple[Any, Any]:
    """An S3 client (the function's own make_client) and an SQS client for a moto server."""
    import boto3

    with scoped_environ(DUMMY_CREDENTIALS):
        s3 = make_client(S3Settings(endpoint_url, REGION), max_pool_connections=max_pool_connections)
    sqs = boto3.client("sqs", endpoint_url=endpoint_url, region_name=REGION,
                       aws_access_key_id=DUMMY_CREDENTIALS["AWS_ACCESS_KEY_ID"],
                       aws_secret_access_key=DUMMY_CREDENTIALS["AWS_SECRET_ACCESS_KEY"])
    return s3, sqs


class QueueWorker:
    """Long-polls an SQS queue and calls a handler with each batch, as Lambda's SQS mapping does.

    Messages the handler does not name in ``batchItemFailures`` are deleted; if the handler
    raises, the whole batch becomes visible again after the visibility timeout.
    """

    def __init__(self, sqs: Any, queue_url: str, handler: Handler, *, batch_size: int = 10,
                 queue_name: str = QUEUE) -> None:
        self.sqs = sqs
        self.queue_url = queue_url
        self.handler = handler
        self.batch_size = batch_size
        self.queue_arn = f"arn:aws:sqs:{REGION}:123456789012:{queue_name}"
        self.handled_batches = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self, pollers: int = 1) -> None:
        """Run ``pollers`` poll loops on threads (each one is like a concurrent invocation)."""
        for i in range(pollers):
            thread = threading.Thread(target=self.run, name=f"sqs-worker-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 30) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=timeout)

    def run(self) -> None:
        """The poll loop, on the calling thread, until :meth:`stop`."""
        while not self._stop.is_set():
            try:
                resp = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=self.batch_size,
                                                WaitTimeSeconds=1, AttributeNames=["All"])
            except Exception as exc:  # noqa: BLE001 - the server is going away: stop quietly
                if not self._stop.is_set():
                    self.errors.append(f"receive: {exc}")
                return
            messages = resp.get("Messages", [])
            if messages:
                self.handle(messages)

    def handle(self, messages: list[dict[str, Any]]) -> None:
        """Call the handler with one batch; delete what it did not ask to have redelivered."""
        event = {"Records": [self.lambda_record(m) for m in messages]}
        try:
            response = self.handler(event, None)
            failed = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
        except Exception as exc:  # noqa: BLE001 - as Lambda would: the whole batch becomes visible again
            self.errors.append(f"handler: {type(exc).__name__}: {exc}")
            return
        self.handled_batches += 1
        done = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
                if m["MessageId"] not in failed]
        if done:
            self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=done)

    def lambda_record(self, message: dict[str, Any]) -> dict[str, Any]:
        """The record shape Lambda's SQS event source mapping delivers."""
        return {"messageId": message["MessageId"], "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"], "attributes": message.get("Attributes", {}),
                "messageAttributes": {}, "md5OfBody": message.get("MD5OfBody", ""), "eventSource": "aws:sqs",
                "eventSourceARN": self.queue_arn, "awsRegion": REGION}


class LocalStack:
    """moto + queue + notification + worker; a context manager that always cleans up."""

    def __init__(self, *, bundle_dir: Path = DEFAULT_BUNDLE, batch_size: int = 10,
                 visibility_timeout: int = 5, store_factory: Callable[[Any], StoreFactory] | None = None,
                 env: dict[str, str] | None = None, limits: DecodeLimits | None = None,
                 video_limits: VideoLimits | None = None,
                 model_cache_dir: Path = REPO / "build" / "local-model-cache") -> None:
        self.server = MotoServer()
        self.bundle_dir = bundle_dir
        self.batch_size = batch_size
        self.visibility_timeout = visibility_timeout
        self._store_factory = store_factory
        self.limits = limits or DecodeLimits()
        self.video_limits = video_limits or VideoLimits()
        self.model_cache_dir = model_cache_dir
        # The environment of the training child process (never this process's own).
        self.env = {**(env if env is not None else os.environ), **DUMMY_CREDENTIALS}
        self.worker: QueueWorker | None = None

    # -- lifecycle -------------------------------------------------------------------

    def __enter__(self) -> LocalStack:
        self.server.start()
        self.s3, self.sqs = moto_clients(self.server.endpoint_url)
        self.store = ObjectStore(self.s3, BUCKET)
        self.settings = FunctionSettings(model_bucket=BUCKET, s3=S3Settings(self.server.endpoint_url, REGION),
                                         model_cache_dir=str(self.model_cache_dir), limits=self.limits,
                                         video=self.video_limits)
        self._create_resources()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_worker()
        self.server.stop()

    def _create_resources(self) -> None:
        self.s3.create_bucket(Bucket=BUCKET)
        dlq = self.sqs.create_queue(QueueName=f"{QUEUE}-dlq")["QueueUrl"]
        dlq_arn = self._arn(dlq)
        self.queue_url = self.sqs.create_queue(QueueName=QUEUE, Attributes={
            "VisibilityTimeout": str(self.visibility_timeout),
            "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"}),
        })["QueueUrl"]
        self.dlq_url = dlq
        rule = {"Key": {"FilterRules": [{"Name": "prefix", "Value": self.settings.input_prefix}]}}
        self.s3.put_bucket_notification_configuration(Bucket=BUCKET, NotificationConfiguration={
            "QueueConfigurations": [{"QueueArn": self._arn(self.queue_url), "Events": ["s3:ObjectCreated:*"],
                                     "Filter": rule}]})

    def _arn(self, url: str) -> str:
        attrs = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        return str(attrs["Attributes"]["QueueArn"])

    # -- the model -------------------------------------------------------------------

    def ensure_model(self, *, retrain: bool = False, train_args: Iterable[str] = (), quiet: bool = False,
                     images: Path | None = None) -> str:
        """Publish the cached local bundle, or train one; return the promoted version."""
        if not retrain and images is None and self._publish_cached(quiet):
            return str(self.store.get_json(f"{self.settings.model_prefix}{bundle.LATEST}")["version"])
        self._seed_training_frames(images)
        cmd = [sys.executable, "-m", "training.fit", "--bucket", BUCKET, "--endpoint-url", self.server.endpoint_url,
               "--weights", self._weights(), "--out", str(self.bundle_dir), "--no-progress", *train_args]
        proc = subprocess.run(cmd, cwd=REPO, env=self.env, text=True, capture_output=quiet)
        if proc.returncode != 0:
            raise LocalStackError(f"training.fit failed with exit code {proc.returncode}; see its message above.")
        return str(self.store.get_json(f"{self.settings.model_prefix}{bundle.LATEST}")["version"])

    def _publish_cached(self, quiet: bool) -> bool:
        try:
            manifest = bundle.verify_dir(self.bundle_dir)
        except BundleError:
            return False
        if should_retrain(manifest, lambda: self._weights() == "imagenet"):
            print(f"local: the bundle in {self.bundle_dir} is a smoke run on random weights and ImageNet weights "
                  "are now available: training a real one")
            return False
        data = (self.bundle_dir / bundle.MANIFEST).read_bytes()
        bundle.upload_bundle(self.store, self.bundle_dir, self.settings.model_prefix, manifest.version)
        bundle.promote(self.store, self.settings.model_prefix, manifest.version, bundle.sha256_bytes(data),
                       manifest.raw["created_at"])
        if not quiet:
            print(f"local: reusing the bundle in {self.bundle_dir} (version {manifest.version}); its training "
                  "report follows (--retrain trains anew)\n")
            print((self.bundle_dir / "report.md").read_text())
        return True

    def _seed_training_frames(self, images: Path | None) -> None:
        from devstack.demo import seed_bucket

        n = seed_bucket(self.store, "train/", images, per_label=60)
        print(f"local: uploaded {n} labelled frames to s3://{BUCKET}/train/ for training")

    def _weights(self) -> str:
        from devstack.demo import choose_weights

        return choose_weights("mobilenet_v2", self.env)

    # -- the worker ------------------------------------------------------------------

    def start_worker(self, pollers: int = 1) -> None:
        """The real handler (make_handler) behind a :class:`QueueWorker` on the stack's queue."""
        from functions.classify import make_handler

        stores = self._store_factory(self.s3) if self._store_factory else (lambda b: ObjectStore(self.s3, b))
        self.worker = QueueWorker(self.sqs, self.queue_url, make_handler(self.settings, stores=stores),
                                  batch_size=self.batch_size)
        self.worker.start(pollers)

    def stop_worker(self) -> None:
        if self.worker is not None:
            self.worker.stop()

    @property
    def handled_batches(self) -> int:
        return 0 if self.worker is None else self.worker.handled_batches

    @property
    def worker_errors(self) -> list[str]:
        return [] if self.worker is None else self.worker.errors

    # -- inputs and results ------------------------------------------------------------

    def result_key(self, key: str) -> str:
        return f"{self.settings.results_prefix}{key[len(self.settings.input_prefix):]}.json"

    def wait_for_results(self, keys: list[str], timeout: float = 120.0,
                         on_result: Callable[[str, dict[str, Any]], None] | None = None) -> dict[str, dict[str, Any]]:
        """Poll until every key has its result (or the timeout); return what arrived."""
        found: dict[str, dict[str, Any]] = {}
        deadline = time.monotonic() + timeout
        while len(found) < len(keys) and time.monotonic() < deadline:
            present = {o.key for o in self.store.list(self.settings.results_prefix)}
            for key in keys:
                if key not in found and self.result_key(key) in present:
                    found[key] = self.store.get_json(self.result_key(key))
                    if on_result:
                        on_result(key, found[key])
            time.sleep(0.2)
        return found


def should_retrain(manifest: bundle.Manifest, real_weights_available: Callable[[], bool]) -> bool:
    """A cached smoke bundle (random weights) is not reused once real weights can be had."""
    return manifest.weights_source == "random" and real_weights_available()
