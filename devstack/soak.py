"""``make soak``: a fault soak of the local stack that proves every input gets exactly one result.

``python -m devstack.soak [--frames 1000] [--fault-rate 0.03] [--seed 1]``

1. The local stack (moto S3 + SQS, the bucket notification to a queue with a dead-letter
   queue after 5 receives) with the tiny test bundle (red frames are ``car``, grey ``bus``).
   Versioning is on for the bucket, so every write of a result leaves a version to count.
2. The worker runs as its own process (``--worker``): it long-polls the queue and calls the
   real handler, as Lambda's SQS event source would; its S3 client goes through
   :class:`devstack.faultproxy.FaultProxy`, which injects 5xx, ``SlowDown``, connection
   resets (before and after a request is applied) and read timeouts.
3. The inputs: N frames, 5% of them bad (not an image, truncated, a 200-byte stub, empty, a
   decompression bomb), two 50 MP 16-bit PNGs, two keys of 1,000 and 1,024 bytes (the proxy
   refuses keys over 1,024 bytes, as S3 does), a few clips and one corrupt clip.  While they
   are processed the soak sends duplicate notifications (some racing the first delivery,
   some after the result exists), re-uploads a few objects unchanged, sends poison messages,
   and SIGKILLs the worker once mid-batch and starts a new one.
4. Reconciliation: inputs without a result, inputs whose result was written more than once,
   results whose status (or label) is wrong for their input, and what sits in the
   dead-letter queue, and why.  One table; the exit code is 1 on any loss, duplicate, wrong
   result or unexpected dead letter, 0 otherwise.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import io
import json
import logging
import os
import random
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from devstack.faultproxy import FAULT_KINDS, FaultProxy

# The local stack's public API; it moves to devstack/ with the restructuring: change this line only.
from devstack.stack import BUCKET, LocalStack

REPO = Path(__file__).resolve().parents[1]
RED, GREY = (220, 20, 20), (128, 128, 128)
POISON_BODIES = ("this is not json", '{"hello": "world"}', '{"Records": [{"eventSource": "aws:s3", "s3": {}}]}',
                 '{"Records": "nope"}')
# The worker's S3 client gives up on a held-back answer after this, and retries.
WORKER_READ_TIMEOUT_S = 1.5
# Every S3 request of the worker fails for this long once: longer than botocore's retries last,
# so records fail, are named in batchItemFailures and come back from SQS.
BROWNOUT_S = 6.0


@dataclasses.dataclass(frozen=True)
class Input:
    key: str
    data: bytes
    kind: str  # frame, heavy, bad, clip, bad-clip
    status: str  # the result status it must get
    label: str | None = None  # for frames: the label it must get


# -- inputs ---------------------------------------------------------------------------------


def _jpeg(colour: tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _png(width: int, height: int, depth: int = 8, row: bytes | None = None) -> bytes:
    """A grey PNG whose every row is ``row``; without it, a header and a token IDAT (a bomb's calling card)."""
    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    deflate = zlib.compressobj(1)
    if row is None:
        idat = deflate.compress(b"\0" * 64)
    else:
        idat = b"".join(deflate.compress((b"\0" + row) * min(256, height - top)) for top in range(0, height, 256))
    ihdr = struct.pack(">IIBBBBB", width, height, depth, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat + deflate.flush())
            + chunk(b"IEND", b""))


def _heavy_png() -> bytes:
    """7071 x 7071 16-bit grey (50 MP, 100 MB decoded, ~200 KB on disk): the memory budget's case."""
    side = 7071
    return _png(side, side, 16, struct.pack(">H", 33000) * side)


def _bad_inputs() -> list[tuple[str, bytes]]:
    frame = _jpeg(RED, (320, 240))
    return [("not-an-image.jpg", b"%PDF-1.4 definitely not a frame"), ("truncated.jpg", frame[: len(frame) // 2]),
            ("stub.jpg", frame[:200]), ("empty.jpg", b""), ("bomb.png", _png(60_000, 60_000))]


def _long_key(length: int, i: int) -> str:
    head = f"incoming/long/{i}-"
    return head + "k" * (length - len(head.encode()) - 4) + ".jpg"


def build_inputs(frames: int, clips: int, seed: int) -> list[Input]:
    """``frames`` frames (5% bad, two heavy), ``clips`` clips and one corrupt clip, in a seeded order."""
    rng = random.Random(seed)
    red, grey = _jpeg(RED), _jpeg(GREY)
    bad = _bad_inputs()
    n_bad = max(len(bad), round(frames * 0.05))
    inputs = [Input(f"incoming/bad/{i:04d}-{bad[i % len(bad)][0]}", bad[i % len(bad)][1], "bad", "error")
              for i in range(n_bad)]
    heavy = _heavy_png()
    inputs += [Input(f"incoming/heavy/{i}.png", heavy, "heavy", "ok", "bus") for i in range(2)]
    # Keys of 1,000-1,024 bytes are legal on S3, but results/<key>.json would not be.
    inputs += [Input(_long_key(length, i), red, "long-key", "ok", "car") for i, length in enumerate((1000, 1024))]
    for i in range(frames - len(inputs)):
        label = rng.choice(("car", "bus"))
        # Keys as cameras make them: folders, spaces, plus signs and non-ASCII all occur.
        key = f"incoming/cam{i % 7}/{'frame' if i % 5 else 'frame +ü'} {i:05d}.jpg"
        inputs.append(Input(key, red if label == "car" else grey, "frame", "ok", label))
    if clips:
        from devstack.samples import clip_bytes

        clip = clip_bytes(("bus", "car"), seconds_each=0.5, fps=6, seed=seed)
        inputs += [Input(f"incoming/clips/clip-{i}.mp4", clip, "clip", "ok") for i in range(clips)]
        inputs.append(Input("incoming/clips/corrupt.mp4", clip[: len(clip) // 3] + os.urandom(2048), "bad-clip",
                            "error"))
    rng.shuffle(inputs)
    return inputs


# -- the worker process -----------------------------------------------------------------------


def worker_main(config: dict[str, Any]) -> int:
    """The child: poll SQS, call the real handler, delete what it did not name as failed."""
    from devstack.moto_server import DUMMY_CREDENTIALS

    os.environ.update(DUMMY_CREDENTIALS)
    logging.basicConfig(filename=config["log"], level=logging.INFO, format="%(message)s")
    from functions.classify import make_handler
    from shared.config import FunctionSettings, S3Settings
    from shared.storage import ObjectStore, make_client

    settings = FunctionSettings(model_bucket=BUCKET, s3=S3Settings(config["s3"], "us-east-1"),
                                model_cache_dir=config["cache"], max_workers=4)
    client = make_client(settings.s3, read_timeout=WORKER_READ_TIMEOUT_S)
    handler = make_handler(settings, stores=lambda bucket: ObjectStore(client, bucket))
    sqs = _sqs(config["sqs"])
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    while not stop.is_set():
        messages = sqs.receive_message(QueueUrl=config["queue"], MaxNumberOfMessages=10, WaitTimeSeconds=1,
                                       AttributeNames=["All"]).get("Messages", [])
        if messages:
            _handle_batch(sqs, config, handler, messages)
    return 0


def _sqs(endpoint: str) -> Any:
    import botocore.session

    return botocore.session.get_session().create_client("sqs", endpoint_url=endpoint, region_name="us-east-1")


def _handle_batch(sqs: Any, config: dict[str, Any], handler: Any, messages: list[dict[str, Any]]) -> None:
    print("begin", flush=True)  # the parent kills the worker between "begin" and "end"
    records = [{"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
                "attributes": m.get("Attributes", {}), "messageAttributes": {}, "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:soak", "awsRegion": "us-east-1"}
               for m in messages]
    try:
        response = handler({"Records": records}, None)
    except Exception as exc:  # noqa: BLE001 - as Lambda: the whole batch becomes visible again
        logging.getLogger("soak").error(json.dumps({"status": "batch-failed", "error": repr(exc)}))
        print("end", flush=True)
        return
    failed = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
    done = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
            if m["MessageId"] not in failed]
    if done:
        sqs.delete_message_batch(QueueUrl=config["queue"], Entries=done)
    print("end", flush=True)


class Worker:
    """The worker child process; ``kill_mid_batch`` SIGKILLs it while it handles a batch."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.proc: subprocess.Popen[str] | None = None
        self.in_batch = threading.Event()
        self.starts = 0

    def start(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "devstack.soak", "--worker", json.dumps(self.config)],
                                     cwd=REPO, stdout=subprocess.PIPE, text=True, start_new_session=True)
        self.starts += 1
        threading.Thread(target=self._follow, args=(self.proc,), daemon=True).start()

    def _follow(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.strip() == "begin":
                self.in_batch.set()
            elif line.strip() == "end":
                self.in_batch.clear()

    def kill_mid_batch(self, timeout: float = 30.0) -> bool:
        """SIGKILL once a batch is under way; False if none started within ``timeout``."""
        assert self.proc is not None
        mid = self.in_batch.wait(timeout)
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.in_batch.clear()
        return mid

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# -- driving --------------------------------------------------------------------------------


@dataclasses.dataclass
class Stats:
    duplicates_sent: int = 0
    reuploads: int = 0
    poison_sent: int = 0
    kills: int = 0
    killed_mid_batch: bool = False


def _notification(key: str, etag: str) -> str:
    from urllib.parse import quote_plus

    return json.dumps({"Records": [{"eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
                                    "eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": BUCKET},
                                    "object": {"key": quote_plus(key, safe="/"), "eTag": etag}}}]})


def upload(stack: LocalStack, inputs: list[Input], stats: Stats, rng: random.Random) -> dict[str, str]:
    """Upload every input (8 threads); some get an immediate duplicate notification, racing the first."""
    etags: dict[str, str] = {}

    def put(item: Input) -> None:
        etags[item.key] = stack.store.put(item.key, item.data)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, inputs))
    for item in rng.sample(inputs, max(2, len(inputs) // 40)):
        stack.sqs.send_message(QueueUrl=stack.queue_url, MessageBody=_notification(item.key, etags[item.key]))
        stats.duplicates_sent += 1
    for body in POISON_BODIES:
        stack.sqs.send_message(QueueUrl=stack.queue_url, MessageBody=body)
        stats.poison_sent += 1
    return etags


def disturb(stack: LocalStack, worker: Worker, proxy: FaultProxy, inputs: list[Input], etags: dict[str, str],
            stats: Stats, rng: random.Random, deadline: float) -> None:
    """At 40% of the results: SIGKILL the worker mid-batch and restart it; at 60%, an S3 brownout
    (every request fails for a few seconds, longer than botocore's retries last); then late duplicates."""
    while time.monotonic() < deadline and len(results_present(stack, inputs)) < 0.4 * len(inputs):
        time.sleep(0.5)
    print(f"soak: {len(results_present(stack, inputs))} of {len(inputs)} results; SIGKILL to the worker", flush=True)
    stats.killed_mid_batch = worker.kill_mid_batch()
    stats.kills += 1
    worker.start()
    _brownout(stack, inputs, proxy, deadline)
    done = sorted(results_present(stack, inputs))
    for key in rng.sample(done, min(len(done), max(2, len(inputs) // 50))):
        stack.sqs.send_message(QueueUrl=stack.queue_url, MessageBody=_notification(key, etags[key]))
        stats.duplicates_sent += 1
    by_key = {item.key: item for item in inputs}
    for key in rng.sample(done, min(len(done), max(1, len(inputs) // 100))):
        stack.store.put(key, by_key[key].data)  # the same bytes again: a new notification, same ETag
        stats.reuploads += 1


def _brownout(stack: LocalStack, inputs: list[Input], proxy: FaultProxy, deadline: float) -> None:
    while time.monotonic() < deadline and len(results_present(stack, inputs)) < 0.6 * len(inputs):
        time.sleep(0.5)
    print(f"soak: {len(results_present(stack, inputs))} of {len(inputs)} results; S3 brownout for "
          f"{BROWNOUT_S:g} s", flush=True)
    proxy.outage(BROWNOUT_S)
    time.sleep(BROWNOUT_S)


def results_present(stack: LocalStack, inputs: list[Input]) -> set[str]:
    present = {o.key for o in stack.store.list(stack.settings.results_prefix)}
    return {item.key for item in inputs if result_key(stack, item.key) in present}


def result_key(stack: LocalStack, key: str) -> str:
    from functions.service import result_key_for

    found = result_key_for(stack.settings, key)
    assert found is not None
    return found


def settle(stack: LocalStack, inputs: list[Input], deadline: float) -> None:
    """Wait until the queue has been empty for a while and the poison sits in the DLQ (or the deadline).

    Every input should have its result by then; one that has not will not get it later.
    """
    shown, idle = time.monotonic(), 0
    while time.monotonic() < deadline:
        done = len(results_present(stack, inputs))
        idle = idle + 1 if _depth(stack, stack.queue_url) == 0 else 0
        if idle >= 3 and _depth(stack, stack.dlq_url) >= len(POISON_BODIES):
            return
        if time.monotonic() - shown > 15:
            print(f"soak: {done} of {len(inputs)} results so far", flush=True)
            shown = time.monotonic()
        time.sleep(1)


def _depth(stack: LocalStack, url: str) -> int:
    attrs = stack.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
        "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


# -- reconciliation ---------------------------------------------------------------------------


@dataclasses.dataclass
class Report:
    inputs: collections.Counter[str]
    results: int
    missing: list[str]
    duplicated: dict[str, int]
    wrong: list[str]
    dlq_poison: list[str]
    dlq_other: list[str]
    statuses: collections.Counter[str] = dataclasses.field(default_factory=collections.Counter)

    @property
    def failed(self) -> bool:
        return bool(self.missing or self.duplicated or self.wrong or self.dlq_other
                    or len(self.dlq_poison) != len(POISON_BODIES))


def reconcile(stack: LocalStack, inputs: list[Input], worker_log: Path) -> Report:
    versions = _result_versions(stack)
    missing, wrong, duplicated = [], [], {}
    for item in inputs:
        key = result_key(stack, item.key)
        if key not in versions:
            missing.append(item.key)
            continue
        if versions[key] > 1:
            duplicated[item.key] = versions[key]
        result = stack.store.get_json(key)
        problem = _check(item, result)
        if problem:
            wrong.append(f"{item.key}: {problem}")
    poison, other = _drain_dlq(stack, worker_log)
    return Report(collections.Counter(item.kind for item in inputs), len(inputs) - len(missing), missing,
                  duplicated, wrong, poison, other, _logged_statuses(worker_log))


def _check(item: Input, result: dict[str, Any]) -> str | None:
    if result.get("status") != item.status:
        error = result.get("error") or {}
        return (f"status {result.get('status')!r}, expected {item.status!r} "
                f"({error.get('type')}: {error.get('message')})")
    if item.label is not None and result.get("label") != item.label:
        return f"label {result.get('label')!r}, expected {item.label!r}"
    if (result.get("source") or {}).get("key") != item.key:
        return f"names source {(result.get('source') or {}).get('key')!r}"
    return None


def _result_versions(stack: LocalStack) -> dict[str, int]:
    """Writes per result JSON: the versions the (versioned) bucket keeps of each."""
    counts: collections.Counter[str] = collections.Counter()
    paginator = stack.s3.get_paginator("list_object_versions")
    for page in paginator.paginate(Bucket=BUCKET, Prefix=stack.settings.results_prefix):
        for version in page.get("Versions", []):
            if version["Key"].endswith(".json"):
                counts[version["Key"]] += 1
    return dict(counts)


def _drain_dlq(stack: LocalStack, worker_log: Path) -> tuple[list[str], list[str]]:
    """(poison, other): each dead letter with the reason the worker logged for it."""
    reasons = _logged_reasons(worker_log)
    poison: list[str] = []
    other: list[str] = []
    while True:
        messages = stack.sqs.receive_message(QueueUrl=stack.dlq_url, MaxNumberOfMessages=10, VisibilityTimeout=600,
                                             AttributeNames=["All"]).get("Messages", [])
        if not messages:
            return poison, other
        for message in messages:
            why = reasons.get(message["MessageId"], "no reason logged")
            line = f"{message['Body'][:48]!r}: {why}"
            (poison if message["Body"] in POISON_BODIES else other).append(line)


def _logged_statuses(worker_log: Path) -> collections.Counter[str]:
    """How the handler settled records, over every delivery: ok, error, skipped, failed (retried)."""
    counts: collections.Counter[str] = collections.Counter()
    if worker_log.exists():
        for line in worker_log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError, AttributeError):
                entry = json.loads(line)
                if entry.get("key") and entry.get("status"):
                    counts[entry["status"]] += 1
    return counts


def _logged_reasons(worker_log: Path) -> dict[str, str]:
    reasons: dict[str, str] = {}
    if not worker_log.exists():
        return reasons
    for line in worker_log.read_text(errors="replace").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        ident = entry.get("item") or entry.get("message_id")
        if ident and entry.get("status") == "failed":
            reasons[ident] = str(entry.get("reason") or (entry.get("error") or {}).get("message"))
    return reasons


def _shorten(text: str, keep: int = 160) -> str:
    """Long keys (the soak has 1,024-byte ones) cut in the middle."""
    return text if len(text) <= keep else f"{text[:keep // 2]}...{text[-keep // 2:]}"


def print_table(report: Report, stats: Stats, proxy: FaultProxy, elapsed: float) -> None:
    total = sum(report.inputs.values())
    rows = [
        ("inputs", f"{total} ({', '.join(f'{n} {k}' for k, n in sorted(report.inputs.items()))})"),
        ("results", f"{report.results} of {total}"),
        ("lost (no result)", str(len(report.missing))),
        ("written more than once", str(len(report.duplicated))),
        ("wrong status or label", str(len(report.wrong))),
        ("dead letters: poison", f"{len(report.dlq_poison)} of {stats.poison_sent} sent"),
        ("dead letters: inputs", str(len(report.dlq_other))),
        ("handler outcomes", ", ".join(f"{report.statuses[k]} {k}" for k in ("ok", "error", "skipped", "failed"))
         + " (every delivery; failed ones were redelivered)"),
        ("S3 requests via proxy", f"{proxy.requests:,}"),
        ("faults injected", ", ".join(f"{proxy.counts[k]} {k}" for k in FAULT_KINDS)
         + f"; {sum(n for k, n in proxy.counts.items() if k.startswith('outage'))} in a {BROWNOUT_S:g} s brownout"),
        ("worker SIGKILLs", f"{stats.kills} ({'mid-batch' if stats.killed_mid_batch else 'between batches'})"),
        ("duplicate notifications", f"{stats.duplicates_sent} sent, {stats.reuploads} unchanged re-uploads"),
        ("elapsed", f"{elapsed:.0f} s"),
        ("verdict", "FAIL" if report.failed else "PASS"),
    ]
    width = max(len(name) for name, _ in rows)
    print(f"\n{'soak':<{width}}  figure\n{'-' * width}  {'-' * 40}")
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    details = ([f"lost: {k}" for k in report.missing] + [f"written {n}x: {k}" for k, n in report.duplicated.items()]
               + [f"wrong: {w}" for w in report.wrong] + [f"dead letter: {d}" for d in report.dlq_other]
               + [f"poison: {d}" for d in report.dlq_poison])
    for line in details[:20]:
        print(f"  {_shorten(line)}")
    if len(details) > 20:
        print(f"  ... and {len(details) - 20} more")


# -- the command line ---------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp, _stack(Path(tmp)) as stack, \
            FaultProxy(stack.server.endpoint_url, rate=args.fault_rate, seed=args.seed,
                       stall_s=WORKER_READ_TIMEOUT_S + 1) as proxy:
        inputs = build_inputs(args.frames, args.clips, args.seed)
        print(f"soak: {len(inputs)} inputs, S3 faults at {args.fault_rate:.0%} of the worker's requests "
              f"(proxy {proxy.endpoint_url} -> moto {stack.server.endpoint_url})", flush=True)
        log = Path(tmp) / "worker.log"
        worker = Worker({"s3": proxy.endpoint_url, "sqs": stack.server.endpoint_url, "queue": stack.queue_url,
                         "cache": str(Path(tmp) / "model-cache"), "log": str(log)})
        worker.start()
        stats = Stats()
        deadline = time.monotonic() + args.timeout
        try:
            etags = upload(stack, inputs, stats, rng)
            disturb(stack, worker, proxy, inputs, etags, stats, rng, deadline)
            settle(stack, inputs, deadline)
        finally:
            worker.stop()
        proxy.enabled.clear()
        report = reconcile(stack, inputs, log)
        print_table(report, stats, proxy, time.monotonic() - started)
        return 1 if report.failed else 0


@contextlib.contextmanager
def _stack(tmp: Path) -> Iterator[LocalStack]:
    """The local stack with the tiny bundle published and versioning on; no in-process worker."""
    from tests.fakes import build_tiny_bundle

    bundle_dir = tmp / "bundle"
    build_tiny_bundle(bundle_dir)
    with LocalStack(bundle_dir=bundle_dir, visibility_timeout=3, model_cache_dir=tmp / "cache") as stack:
        stack.s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        stack.ensure_model(quiet=True)
        yield stack


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Fault soak of the local stack: N frames through moto S3 -> SQS -> a "
                                            "worker process, with S3 faults, a SIGKILL, duplicates and poison; "
                                            "then every input is reconciled against its result.")
    p.add_argument("--frames", type=int, default=1000, help="frames to drive (default 1000; 5%% of them bad)")
    p.add_argument("--clips", type=int, default=3, help="good clips (default 3), plus one corrupt clip")
    p.add_argument("--fault-rate", type=float, default=0.03,
                   help="share of the worker's S3 requests that get a fault (default 0.03)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--timeout", type=float, default=None, help="seconds to wait for results (default 120 + 0.6/frame)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        return worker_main(json.loads(args.worker))
    if args.timeout is None:
        args.timeout = 120 + 0.6 * args.frames
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
