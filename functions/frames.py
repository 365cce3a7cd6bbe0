"""Still frames: downloaded and decoded on threads, classified in batches, one result each."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

import numpy as np

from functions.events import ObjectRef
from functions.jobs import Job, JobRunner, explain_denied, ms_since
from functions.results import Outcome, Status
from shared.imaging import decode_image
from shared.runtime import Prediction
from shared.storage import ObjectStore

# Frames per backbone run: one event is normally one batch; this only bounds memory
# when a large SQS batch (up to 10,000 messages) arrives at once.
INFERENCE_BATCH = 32


@dataclasses.dataclass
class FrameJob(Job):
    what: ClassVar[str] = "frame"

    image: np.ndarray | None = None
    prediction: Prediction | None = None
    batch_size: int = 0

    def finish(self, status: Status, *, result: dict[str, Any] | None = None,
               error: BaseException | None = None) -> None:
        self.image = None  # free the frame as soon as it is no longer needed
        super().finish(status, result=result, error=error)


class FrameService(JobRunner[FrameJob]):
    """Classifies still frames: download + decode (threads), one batched inference, write (threads)."""

    def run(self, refs: Sequence[ObjectRef]) -> list[Outcome]:
        """One outcome per ref, in order, in inference batches of at most INFERENCE_BATCH."""
        outcomes: list[Outcome] = []
        for start in range(0, len(refs), INFERENCE_BATCH):
            outcomes += self.run_batch(refs[start:start + INFERENCE_BATCH])
        return outcomes

    def run_batch(self, refs: Sequence[ObjectRef]) -> list[Outcome]:
        jobs = [self.new_job(ref) for ref in refs]
        todo = [job for job in jobs if isinstance(job, FrameJob)]
        if todo:
            # Downloads and decodes are I/O and C code that release the GIL; inference
            # is one batched call on this thread.
            with ThreadPoolExecutor(max_workers=min(self.settings.max_workers, len(todo))) as pool:
                list(pool.map(self.guarded(self.prepare), todo))
                self.infer(todo)
                list(pool.map(self.guarded(self.write), todo))
        return [job.settle() if isinstance(job, FrameJob) else job for job in jobs]

    def make_job(self, ref: ObjectRef, result_key: str, store: ObjectStore, started: float) -> FrameJob:
        return FrameJob(ref, result_key, store, started, ref.etag, ref.size)

    # -- stages -------------------------------------------------------------------------

    def prepare(self, job: FrameJob) -> None:
        """Skip a repeated delivery; otherwise download and decode the frame."""
        if self.skip_if_done(job):
            return
        started = time.perf_counter()
        with explain_denied(job):
            data = job.store.get(job.ref.key, max_bytes=self.settings.limits.max_bytes)
        job.timings["download"] = ms_since(started)
        job.etag, job.size = data.etag, data.size
        started = time.perf_counter()
        job.image = decode_image(data.body, self.classifier.input_size, limits=self.settings.limits,
                                 key=job.ref.key)
        job.timings["decode"] = ms_since(started)

    def infer(self, jobs: list[FrameJob]) -> None:
        """Classify every decoded frame of ``jobs`` in one batch."""
        ready = [job for job in jobs if job.outcome is None and job.image is not None]
        if not ready:
            return
        started = time.perf_counter()
        try:
            predictions = self.classifier.predict(np.stack([job.image for job in ready if job.image is not None]))
        except Exception as exc:  # noqa: BLE001 - the whole batch failed (the model, say); retry it later
            for job in ready:
                job.finish(Status.FAILED, error=exc)
            return
        elapsed = ms_since(started)
        for job, prediction in zip(ready, predictions, strict=True):
            job.prediction = prediction
            job.timings["inference"] = elapsed
            job.batch_size = len(ready)

    # -- the result document ------------------------------------------------------------

    def build_result(self, job: FrameJob) -> dict[str, Any]:
        manifest = self.classifier.manifest
        prediction = job.prediction
        return {
            **self.envelope(job),
            "kind": "frame",
            "label": prediction.label if prediction else None,
            "probability": prediction.probability if prediction else None,
            "probabilities": prediction.probabilities if prediction else None,
            "threshold": manifest.threshold,
            "positive_class": manifest.positive_class,
            "imagenet_top": prediction.imagenet_top if prediction else None,
            "batch_size": job.batch_size,
        }
