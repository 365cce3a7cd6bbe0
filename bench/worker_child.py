"""The local stack's worker + the real handler, alone in a process (benchmarks 3 and 7).

Run by ``bench.b3_throughput`` with the runtime-only venv.  It attaches
:class:`functions.local.LocalStack`'s own worker (``_poll`` -> ``_handle`` -> the handler
built by ``make_handler``) to the moto server, bucket and queue the parent created, so
the uploader and the moto server are other processes and this process's peak RSS is the
function's.  Prints ``READY``, then on ``stop`` (stdin) one ``BENCH-RESULT {json}`` line.

Variants (argv): ``--ort VARIANT`` patches ``shared.runtime.session_options`` (see
``bench.ortvariants``); ``--service pipelined`` swaps in :class:`PipelinedService`, which
infers each frame at batch 1 as soon as it is decoded and writes its result while the
other frames are still downloading (the shipped service downloads all, infers the batch,
then writes all); ``--pollers N`` runs N copies of the poll loop (N concurrent invocations).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from unittest import mock


def pipelined_service_class() -> type:
    from functions.service import ClassifyService, Status, _Job

    class PipelinedService(ClassifyService):
        """Same stages and outcomes as ClassifyService; the frames flow through them one by one."""

        def _run_chunk(self, refs):
            jobs = [self._job(ref) for ref in refs]
            todo = [job for job in jobs if isinstance(job, _Job)]
            if todo:
                with ThreadPoolExecutor(max_workers=min(self.settings.max_workers, len(todo))) as pool:
                    prepared = [pool.submit(self._guarded(self._prepare), job) for job in todo]
                    writes = []
                    for job, future in zip(todo, prepared, strict=True):
                        future.result()
                        self._infer([job])
                        writes.append(pool.submit(self._guarded(self._write), job))
                    for future in writes:
                        future.result()
            for job in todo:
                if job.outcome is None:
                    job.finish(Status.FAILED, error=job.error)
            return [job.outcome if isinstance(job, _Job) else job for job in jobs]

    return PipelinedService


class AttachedStack:
    """A LocalStack whose server, bucket and queue already exist (made by the parent)."""

    def __new__(cls, endpoint: str, queue_url: str, model_cache_dir: Path, batch_size: int,
                max_workers: int) -> Any:
        import boto3

        from functions.local import BUCKET, LocalStack
        from shared.config import FunctionSettings, S3Settings
        from shared.storage import ObjectStore, make_client

        stack = LocalStack(batch_size=batch_size, model_cache_dir=model_cache_dir, env={})
        stack.s3 = make_client(S3Settings(endpoint, "us-east-1"), max_pool_connections=32)
        stack.sqs = boto3.client("sqs", endpoint_url=endpoint, region_name="us-east-1")
        stack.store = ObjectStore(stack.s3, BUCKET)
        stack.settings = FunctionSettings(model_bucket=BUCKET, s3=S3Settings(endpoint, "us-east-1"),
                                          model_cache_dir=str(model_cache_dir), max_workers=max_workers)
        stack.queue_url = queue_url
        return stack


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

    stack = AttachedStack(args.endpoint, args.queue_url, args.cache_dir, args.batch_size, args.max_workers)
    if args.service == "pipelined":
        import functions.classify as fc

        # The handler builds its service from this module global; this child process runs only this variant.
        mock.patch.object(fc, "ClassifyService", pipelined_service_class()).start()
    with ortvariants.patched(args.ort, None):
        stack.start_worker()
        extra = [threading.Thread(target=stack._poll, daemon=True) for _ in range(args.pollers - 1)]
        for t in extra:
            t.start()
        print("READY", flush=True)
        sys.stdin.readline()  # the parent says stop (or goes away)
        t0 = time.perf_counter()
        stack.stop_worker()
        for t in extra:
            t.join(timeout=30)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    heavy = sorted(m for m in ("tensorflow", "keras", "lightgbm", "sklearn", "scipy") if m in sys.modules)
    out = {"peak_rss_mb": usage.ru_maxrss / 1024, "cpu_user_s": usage.ru_utime, "cpu_sys_s": usage.ru_stime,
           "handled_batches": stack.handled_batches, "worker_errors": stack.worker_errors[:5],
           "stop_s": time.perf_counter() - t0, "heavy_modules_loaded": heavy}
    print("BENCH-RESULT " + json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
