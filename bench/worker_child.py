"""The local stack's worker + the real handler, alone in a process (benchmarks 3 and 7).

Run by ``bench.throughput`` with the runtime-only venv.  It runs the local stack's own
:class:`devstack.stack.QueueWorker` (poll -> handle -> the handler built by
``make_handler``) against the moto server, bucket and queue the parent created, so the
uploader and the moto server are other processes and this process's peak RSS is the
function's.  Prints ``READY``, then on ``stop`` (stdin) one ``BENCH-RESULT {json}`` line.

Variants (argv): ``--ort VARIANT`` patches ``shared.runtime.session_options`` (see
``bench.ortvariants``); ``--service pipelined`` runs :class:`PipelinedFrames`, which
infers each frame at batch 1 as soon as it is decoded and writes its result while the
other frames are still downloading (the shipped service downloads all, infers the batch,
then writes all); ``--pollers N`` runs N copies of the poll loop (N concurrent invocations).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any


def pipelined_service_class() -> type:
    """A ClassifyService whose frames flow through the same public stages one by one."""
    from functions.frames import FrameJob, FrameService
    from functions.service import ClassifyService

    class PipelinedFrames(FrameService):
        def run_batch(self, refs):
            jobs = [self.new_job(ref) for ref in refs]
            todo = [job for job in jobs if isinstance(job, FrameJob)]
            if todo:
                with ThreadPoolExecutor(max_workers=min(self.settings.max_workers, len(todo))) as pool:
                    prepared = [pool.submit(self.guarded(self.prepare), job) for job in todo]
                    writes = []
                    for job, future in zip(todo, prepared, strict=True):
                        future.result()
                        self.infer([job])
                        writes.append(pool.submit(self.guarded(self.write), job))
                    for future in writes:
                        future.result()
            return [job.settle() if isinstance(job, FrameJob) else job for job in jobs]

    class PipelinedService(ClassifyService):
        frame_service = PipelinedFrames

    return PipelinedService


def attached_worker(endpoint: str, queue_url: str, model_cache_dir: Path, batch_size: int, max_workers: int,
                    service: type | None) -> Any:
    """A QueueWorker with the real handler, on a server, bucket and queue made by the parent."""
    from devstack.stack import BUCKET, REGION, QueueWorker, moto_clients
    from functions.classify import make_handler
    from shared.config import FunctionSettings, S3Settings
    from shared.storage import ObjectStore

    s3, sqs = moto_clients(endpoint)
    settings = FunctionSettings(model_bucket=BUCKET, s3=S3Settings(endpoint, REGION),
                                model_cache_dir=str(model_cache_dir), max_workers=max_workers)
    extra = {"service": service} if service is not None else {}
    handler = make_handler(settings, stores=lambda bucket: ObjectStore(s3, bucket), **extra)
    return QueueWorker(sqs, queue_url, handler, batch_size=batch_size)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--endpoint", required=True)
    p.add_argument("--queue-url", required=True)
    p.add_argument("--cache-dir", type=Path, required=True)
    p.add_argument("--batch-size", type=int, default=10)
    p.add_argument("--max-workers", type=int, default=4)
    p.add_argument("--ort", default="baseline")
    p.add_argument("--service", default="shipped", choices=("shipped", "pipelined"))
    p.add_argument("--pollers", type=int, default=1)
    args = p.parse_args()

    from bench import ortvariants

    service = pipelined_service_class() if args.service == "pipelined" else None
    worker = attached_worker(args.endpoint, args.queue_url, args.cache_dir, args.batch_size, args.max_workers,
                             service)
    with ortvariants.patched(args.ort, None):
        worker.start(args.pollers)
        print("READY", flush=True)
        sys.stdin.readline()  # the parent says stop (or goes away)
        t0 = time.perf_counter()
        worker.stop()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    heavy = sorted(m for m in ("tensorflow", "keras", "lightgbm", "sklearn", "scipy") if m in sys.modules)
    out = {"peak_rss_mb": usage.ru_maxrss / 1024, "cpu_user_s": usage.ru_utime, "cpu_sys_s": usage.ru_stime,
           "handled_batches": worker.handled_batches, "worker_errors": worker.errors[:5],
           "stop_s": time.perf_counter() - t0, "heavy_modules_loaded": heavy}
    print("BENCH-RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
