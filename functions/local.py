"""``python -m functions.local``: the whole system on one machine (the README's main job).

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

import argparse
import contextlib
import json
import logging
import mimetypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from devstack.moto_server import DUMMY_CREDENTIALS, MotoServer
from shared import bundle
from shared.config import DecodeLimits, FunctionSettings, S3Settings, VideoLimits
from shared.errors import BundleError
from shared.storage import ObjectStore, make_client

REPO = Path(__file__).resolve().parents[1]
BUCKET = "cctv-local"
QUEUE = "cctv-frames"
StoreFactory = Callable[[str], ObjectStore]


class LocalStackError(Exception):
    pass


class LocalStack:
    """moto + queue + notification + worker; a context manager that always cleans up."""

    def __init__(self, *, bundle_dir: Path = REPO / "build" / "local-bundle", batch_size: int = 10,
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
        self.env = env if env is not None else dict(os.environ)
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None
        self.handled_batches = 0
        self.worker_errors: list[str] = []

    # -- lifecycle -------------------------------------------------------------------

    def __enter__(self) -> LocalStack:
        # Only ever moto here: dummy credentials, so real ones are never sent anywhere.
        os.environ.update(DUMMY_CREDENTIALS)
        self.env.update(DUMMY_CREDENTIALS)
        self.server.start()
        self.s3 = make_client(S3Settings(self.server.endpoint_url, "us-east-1"), max_pool_connections=32)
        import boto3

        self.sqs = boto3.client("sqs", endpoint_url=self.server.endpoint_url, region_name="us-east-1")
        self.store = ObjectStore(self.s3, BUCKET)
        self.settings = FunctionSettings(model_bucket=BUCKET, s3=S3Settings(self.server.endpoint_url, "us-east-1"),
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

    def start_worker(self) -> None:
        from functions.classify import make_handler

        stores = self._store_factory(self.s3) if self._store_factory else (lambda b: ObjectStore(self.s3, b))
        self.handler = make_handler(self.settings, stores=stores)
        self._worker = threading.Thread(target=self._poll, name="sqs-worker", daemon=True)
        self._worker.start()

    def stop_worker(self) -> None:
        self._stop.set()
        if self._worker is not None:
            self._worker.join(timeout=30)

    def _poll(self) -> None:
        while not self._stop.is_set():
            try:
                resp = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=self.batch_size,
                                                WaitTimeSeconds=1, AttributeNames=["All"])
            except Exception as exc:  # the server is going away: stop quietly
                if not self._stop.is_set():
                    self.worker_errors.append(f"receive: {exc}")
                return
            messages = resp.get("Messages", [])
            if messages:
                self._handle(messages)

    def _handle(self, messages: list[dict[str, Any]]) -> None:
        event = {"Records": [self._lambda_record(m) for m in messages]}
        try:
            response = self.handler(event, None)
            failed = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
        except Exception as exc:  # as Lambda would: the whole batch becomes visible again
            self.worker_errors.append(f"handler: {type(exc).__name__}: {exc}")
            return
        self.handled_batches += 1
        done = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
                if m["MessageId"] not in failed]
        if done:
            self.sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=done)

    def _lambda_record(self, message: dict[str, Any]) -> dict[str, Any]:
        """The record shape Lambda's SQS event source mapping delivers."""
        return {"messageId": message["MessageId"], "receiptHandle": message["ReceiptHandle"],
                "body": message["Body"], "attributes": message.get("Attributes", {}),
                "messageAttributes": {}, "md5OfBody": message.get("MD5OfBody", ""), "eventSource": "aws:sqs",
                "eventSourceARN": f"arn:aws:sqs:us-east-1:123456789012:{QUEUE}", "awsRegion": "us-east-1"}

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


# -- the command line -------------------------------------------------------------------


def sample_inputs(n: int) -> list[tuple[str, bytes]]:
    """Synthetic frames, plus one file that is not an image, to show an error result."""
    from devstack.samples import generate

    frames = [(f"incoming/cam{i % 3}/{label}_{i:03d}.jpg", data)
              for i, (label, _, data) in enumerate(generate(("bus", "car"), (n + 1) // 2, seed=2024))]
    return frames[:n] + [("incoming/cam9/not-a-frame.jpg", b"this is not a JPEG")]


def sample_clip() -> tuple[str, bytes]:
    """A 3 s 160x120 clip (bus, car, bus; one second each) to show video mode."""
    from devstack.samples import clip_bytes

    return "incoming/cam9/clip.mp4", clip_bytes(("bus", "car", "bus"), seed=2024)


def content_type(key: str) -> str:
    return mimetypes.guess_type(key)[0] or "application/octet-stream"


def _frame_detail(result: dict[str, Any]) -> str:
    positive, threshold = result.get("positive_class"), result.get("threshold")
    if positive is None or threshold is None:
        return f"{result['label']:<8} p={result['probability']:.3f}"
    # A binary head decides on the positive class's score against the stored threshold.
    return f"{result['label']:<8} p({positive})={result['probabilities'][positive]:.3f} vs threshold {threshold:.3f}"


def print_row(key: str, result: dict[str, Any]) -> None:
    if result.get("status") != "ok":
        detail = f"ERROR {result.get('error', {}).get('type', '?')}: {result.get('error', {}).get('message', '')}"
    elif result.get("kind") == "video":
        detail = _clip_detail(result)
    else:
        detail = _frame_detail(result)
    ms = sum(v for v in result.get("timings_ms", {}).values() if isinstance(v, (int, float)))
    print(f"  {key:<40} {result.get('status', '?'):<6} {detail}  ({ms:.0f} ms)", flush=True)


def _clip_detail(result: dict[str, Any]) -> str:
    """``mostly car (67% of 30 frames), 240 frames/s -> results/....annotated.mp4``."""
    summary, video, timings = result["summary"], result["video"], result["timings"]
    label = summary["dominant_label"]
    share = summary["label_share"][label]
    return (f"mostly {label} ({100 * share:.0f}% of {video['frames_sampled']} frames), "
            f"{timings['frames_per_s']:g} frames/s -> {result['annotated_key']}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Run the classifier locally: moto S3 + SQS, the real handler, "
                                            "sample frames in, results out.")
    p.add_argument("--frames", type=int, default=8, help="sample frames to upload (default 8)")
    p.add_argument("--no-clip", dest="clip", action="store_false",
                   help="upload frames only, not the 3-second sample clip")
    p.add_argument("--serve", action="store_true", help="keep running so you can drop your own frames in")
    p.add_argument("--retrain", action="store_true", help="train a new bundle even if build/local-bundle exists")
    p.add_argument("--images", type=Path, help="train on your own photos, DIR/<label>/*.jpg (implies --retrain)")
    p.add_argument("--verbose", action="store_true", help="show the handler's JSON log lines")
    args = p.parse_args(argv)
    _stop_on_signals()
    # The table below already shows each result; the JSON log lines are for --verbose.
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR, format="%(message)s")
    try:
        with LocalStack() as stack:
            return _run(stack, args)
    except KeyboardInterrupt:
        print("\nlocal: stopped; the moto server is gone too.")
        return 0
    except LocalStackError as exc:
        print(f"local: error: {exc}", file=sys.stderr)
        return 1


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _stop_on_signals() -> None:
    """Ctrl-C and SIGTERM both unwind through the context managers, so moto never outlives us.

    SIGINT is reset explicitly: a process started in the background inherits it ignored.
    """
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)


def _run(stack: LocalStack, args: argparse.Namespace) -> int:
    ep = stack.server.endpoint_url
    print(f"local: moto S3 + SQS at {ep}; bucket {BUCKET}, queue {QUEUE}, notification on incoming/")
    version = stack.ensure_model(retrain=args.retrain, images=args.images)
    print(f"local: serving model {version}")
    stack.start_worker()
    inputs = sample_inputs(args.frames) + ([sample_clip()] if args.clip else [])
    for key, data in inputs:
        stack.store.put(key, data, content_type=content_type(key))
    print(f"local: uploaded {len(inputs)} objects to s3://{BUCKET}/incoming/; results as they appear:")
    found = stack.wait_for_results([k for k, _ in inputs], on_result=print_row)
    missing = len(inputs) - len(found)
    print(f"local: {len(found)} of {len(inputs)} results written under s3://{BUCKET}/results/"
          + (f"; {missing} MISSING" if missing else ""))
    if args.serve:
        _serve(stack, ep)
    return 0 if not missing else 1


def _serve(stack: LocalStack, endpoint: str) -> None:
    print("\nlocal: serving; drop your own frames (or .mp4/.avi/.mov/.mkv clips) in, for example:")
    print(f"  AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing aws s3 cp frame.jpg "
          f"s3://{BUCKET}/incoming/frame.jpg --endpoint-url {endpoint}")
    print(f"  AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing aws s3 cp "
          f"s3://{BUCKET}/results/frame.jpg.json - --endpoint-url {endpoint}")
    print(f"  (a clip's annotated copy: s3://{BUCKET}/results/<key>.annotated.mp4)")
    print("local: Ctrl-C stops everything.")
    seen = {o.key for o in stack.store.list(stack.settings.results_prefix)}
    with contextlib.suppress(KeyboardInterrupt):
        while True:
            for obj in stack.store.list(stack.settings.results_prefix):
                if obj.key not in seen and obj.key.endswith(".json"):  # not the annotated .mp4 files
                    seen.add(obj.key)
                    print_row(obj.key, stack.store.get_json(obj.key))
            time.sleep(1)
    print("\nlocal: stopping the worker and the moto server.")


if __name__ == "__main__":
    sys.exit(main())
