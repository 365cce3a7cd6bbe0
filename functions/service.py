"""The core of the function: object references in, one result document per input out.

No platform event shapes, no environment and no model loading here: the caller hands
in the settings, a store per bucket, a classifier (whose sessions may still be opening
on a thread: only inference waits for them) and a clock.  Each record ends
in exactly one :class:`Outcome`; a bad record never affects the others.

Still frames are downloaded and decoded in threads and classified in one batch.  Clips
(keys ending in .mp4, .avi, .mov or .mkv, any case) are handled one at a time by
:func:`functions.video.process_video`: HEAD, size check, download to a private temp
folder, classify and annotate, then ``results/<key>.annotated.mp4`` and, last,
``results/<key>.json``.  :mod:`functions.video` (and PyAV, inside ``process_video``) is
imported when the first clip arrives, so an event of frames never loads either.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from functions.events import ObjectRef, is_video_key
from shared.config import FunctionSettings
from shared.errors import AccessDeniedError, CCTVError, InvalidImageError, InvalidVideoError, ObjectNotFoundError
from shared.imaging import decode_image
from shared.runtime import Classifier, Prediction
from shared.storage import ObjectInfo, ObjectStore

RESULT_SCHEMA_VERSION = 1
# Frames per backbone run: one event is normally one batch; this only bounds memory
# when a large SQS batch (up to 10,000 messages) arrives at once.
INFERENCE_BATCH = 32
# S3 user metadata on each result, so a HEAD shows what a result was computed from.
META_SOURCE_ETAG = "source-etag"
META_MODEL_VERSION = "model-version"
# results/<key relative to INPUT_PREFIX> + this: the annotated copy of a clip.
ANNOTATED_SUFFIX = ".annotated.mp4"
# What a clip's result takes from process_video's answer (its model entry is merged into the
# envelope's; its schema_version and kind are the envelope's own).
VIDEO_RESULT_PARTS = ("video", "sampling", "summary", "partial", "annotated", "timings", "frames")

StoreFactory = Callable[[str], ObjectStore]
Clock = Callable[[], datetime]

log = logging.getLogger(__name__)


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def iso_utc(moment: datetime) -> str:
    """ISO 8601 in UTC with a ``Z``; a naive datetime is taken to be UTC already."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Status(str, enum.Enum):
    OK = "ok"            # classified; result written
    ERROR = "error"      # bad input; an error result was written, no retry
    SKIPPED = "skipped"  # an equivalent result already exists (repeated delivery)
    IGNORED = "ignored"  # outside INPUT_PREFIX; nothing written
    FAILED = "failed"    # transient or unexpected fault; nothing written, must be retried


@dataclasses.dataclass(frozen=True)
class Outcome:
    ref: ObjectRef
    status: Status
    result_key: str | None = None
    result: dict[str, Any] | None = None
    error: BaseException | None = None
    ms: float = 0.0

    @property
    def needs_retry(self) -> bool:
        return self.status is Status.FAILED


def result_key_for(settings: FunctionSettings, key: str) -> str | None:
    """``results/<key relative to the input prefix>.json``, or None for keys not to process."""
    if not key.startswith(settings.input_prefix) or key.endswith("/"):
        return None  # outside the input prefix, or a "folder" marker object
    return f"{settings.results_prefix}{key[len(settings.input_prefix):]}.json"


def annotated_key_for(settings: FunctionSettings, key: str) -> str | None:
    """``results/<key relative to the input prefix>.annotated.mp4``, or None for keys not to process.

    Always under RESULTS_PREFIX, which may not overlap INPUT_PREFIX (FunctionSettings
    refuses that), so writing it can never trigger the function again.
    """
    result_key = result_key_for(settings, key)
    return None if result_key is None else result_key.removesuffix(".json") + ANNOTATED_SUFFIX


def _names(cls: type[Any]) -> set[str]:
    return {cls.__name__}.union(*(_names(sub) for sub in cls.__subclasses__()))


def is_final(result: dict[str, Any]) -> bool:
    """Whether a stored result settles its input: ok, or an error in the image or clip itself.

    Storage errors (deleted, access denied) are not final: a later delivery of the same
    bytes must be processed again rather than skipped.
    """
    if result.get("status") == Status.OK.value:
        return True
    return str((result.get("error") or {}).get("type")) in _names(InvalidImageError) | _names(InvalidVideoError)


@dataclasses.dataclass
class _Job:
    """Mutable working state of one record while its event is processed."""

    ref: ObjectRef
    result_key: str
    store: ObjectStore
    started: float
    etag: str | None = None
    size: int | None = None
    timings: dict[str, float] = dataclasses.field(default_factory=dict)
    result_exists: bool = False
    image: np.ndarray | None = None
    prediction: Prediction | None = None
    batch_size: int = 0
    # Clips only: where the annotated mp4 goes (None for a frame), and what process_video found.
    annotated_key: str | None = None
    video: dict[str, Any] | None = None
    error: CCTVError | None = None
    outcome: Outcome | None = None

    def finish(self, status: Status, *, result: dict[str, Any] | None = None,
               error: BaseException | None = None) -> None:
        self.image = None  # free the frame as soon as it is no longer needed
        self.outcome = Outcome(self.ref, status, self.result_key, result, error,
                               round((time.perf_counter() - self.started) * 1000, 1))


class ClassifyService:
    """Classifies the records of one event with a given classifier."""

    def __init__(self, settings: FunctionSettings, stores: StoreFactory, classifier: Classifier,
                 clock: Clock = utc_now) -> None:
        self.settings = settings
        self.stores = stores
        self.classifier = classifier
        self.clock = clock

    @property
    def model_version(self) -> str:
        return self.classifier.manifest.version

    def run(self, refs: Sequence[ObjectRef]) -> list[Outcome]:
        """One outcome per ref, in order; never raises for a single bad record.

        Frames first, in inference batches; then each clip on its own.
        """
        frames = [i for i, ref in enumerate(refs) if not is_video_key(ref.key)]
        outcomes: dict[int, Outcome] = {}
        for start in range(0, len(frames), INFERENCE_BATCH):
            chunk = frames[start:start + INFERENCE_BATCH]
            outcomes.update(zip(chunk, self._run_chunk([refs[i] for i in chunk]), strict=True))
        for i, ref in enumerate(refs):
            if i not in outcomes:
                outcomes[i] = self._run_clip(ref)
        return [outcomes[i] for i in range(len(refs))]

    def _run_chunk(self, refs: Sequence[ObjectRef]) -> list[Outcome]:
        jobs: list[_Job | Outcome] = [self._job(ref) for ref in refs]
        todo = [job for job in jobs if isinstance(job, _Job)]
        if todo:
            # Downloads and decodes are I/O and C code that release the GIL; inference
            # is one batched call on this thread.
            with ThreadPoolExecutor(max_workers=min(self.settings.max_workers, len(todo))) as pool:
                list(pool.map(self._guarded(self._prepare), todo))
                self._infer(todo)
                list(pool.map(self._guarded(self._write), todo))
        for job in todo:
            if job.outcome is None:  # the result itself could not be written
                job.finish(Status.FAILED, error=job.error)
        return [job.outcome if isinstance(job, _Job) else job for job in jobs]  # type: ignore[misc]

    def _run_clip(self, ref: ObjectRef) -> Outcome:
        job = self._job(ref)
        if isinstance(job, Outcome):
            return job
        job.annotated_key = annotated_key_for(self.settings, ref.key)
        self._guarded(self._process_clip)(job)
        self._guarded(self._write)(job)
        if job.outcome is None:  # the result itself could not be written
            job.finish(Status.FAILED, error=job.error)
        return job.outcome  # type: ignore[return-value]

    def _job(self, ref: ObjectRef) -> _Job | Outcome:
        result_key = result_key_for(self.settings, ref.key)
        if result_key is None:
            return Outcome(ref, Status.IGNORED)
        return _Job(ref, result_key, self.stores(ref.bucket), time.perf_counter(), ref.etag, ref.size)

    @staticmethod
    def _guarded(step: Callable[[_Job], None]) -> Callable[[_Job], None]:
        """Run ``step`` unless the job is settled; turn any exception into the job's outcome."""
        def run(job: _Job) -> None:
            if job.outcome is not None:
                return
            try:
                step(job)
            except CCTVError as exc:
                if exc.retryable:
                    job.finish(Status.FAILED, error=exc)
                else:
                    job.error = exc  # bad input or a lasting storage refusal: report it in a result
            except Exception as exc:  # noqa: BLE001 - one record's bug must not sink the batch
                job.finish(Status.FAILED, error=exc)
        return run

    # -- stages -------------------------------------------------------------------------

    def _prepare(self, job: _Job) -> None:
        existing = self._existing_result(job)
        if existing is not None:
            job.finish(Status.SKIPPED, result=existing)
            return
        started = time.perf_counter()
        with _explain_denied(job):
            data = job.store.get(job.ref.key, max_bytes=self.settings.limits.max_bytes)
        job.timings["download"] = _ms_since(started)
        job.etag, job.size = data.etag, data.size
        started = time.perf_counter()
        job.image = decode_image(data.body, self.classifier.input_size, limits=self.settings.limits,
                                 key=job.ref.key)
        job.timings["decode"] = _ms_since(started)

    def _process_clip(self, job: _Job) -> None:
        existing = self._existing_result(job)
        if existing is not None:
            job.finish(Status.SKIPPED, result=existing)
            return
        if not self._model_ready(job):
            return
        with _explain_denied(job):
            info = job.store.head(job.ref.key)
        if info is None:
            raise ObjectNotFoundError(f"s3://{job.ref.bucket}/{job.ref.key} does not exist (it may have been "
                                      "deleted before it was read).", bucket=job.ref.bucket, key=job.ref.key)
        job.etag, job.size = info.etag, info.size
        from functions.video import check_video_size, video_workspace

        check_video_size(info.size, self.settings.video, job.ref.key)  # before a byte is downloaded
        with video_workspace() as (clip, annotated):
            self._classify_clip(job, clip, annotated)

    def _classify_clip(self, job: _Job, clip: Path, annotated: Path) -> None:
        """Download, classify and annotate, upload the annotated mp4 (the JSON comes after, in _write)."""
        limits = self.settings.video
        started = time.perf_counter()
        with _explain_denied(job):
            data = job.store.download(job.ref.key, clip, max_bytes=limits.max_bytes)
        job.timings["download"] = _ms_since(started)
        job.etag, job.size = data.etag, data.size
        started = time.perf_counter()
        job.video = process_video(clip, self.classifier, out_path=annotated, limits=limits, name=job.ref.key)
        job.timings["process"] = _ms_since(started)
        started = time.perf_counter()
        assert job.annotated_key is not None
        job.store.put_file(job.annotated_key, annotated, content_type="video/mp4", metadata=self._metadata(job))
        job.timings["upload"] = _ms_since(started)

    def _model_ready(self, job: _Job) -> bool:
        """Wait for the model, which may still be loading; if that failed, the clip is retried.

        Whatever the loading error (a damaged bundle, a storage fault), it is not the clip's
        fault, so it must never end up in the clip's result (frames get the same in _infer).
        """
        try:
            self.classifier.wait()
        except Exception as exc:  # noqa: BLE001 - any loading failure: retry the record later
            job.finish(Status.FAILED, error=exc)
            return False
        return True

    def _existing_result(self, job: _Job) -> dict[str, Any] | None:
        """The stored result if it already answers this delivery (same bytes, same model)."""
        if _head(job.store, job.result_key) is None:
            return None  # the usual case: one cheap HEAD and on we go
        job.result_exists = True
        try:
            existing: dict[str, Any] = job.store.get_json(job.result_key)
        except (ObjectNotFoundError, ValueError):
            return None  # deleted or unreadable meanwhile: write it afresh
        if existing.get("model", {}).get("version") != self.model_version or not is_final(existing):
            return None
        etag = job.etag
        if etag is None:  # Yandex events carry no ETag: ask the store
            info = _head(job.store, job.ref.key)
            if info is None:
                return existing  # the frame is gone; keep what was computed from it
            etag = info.etag
        return existing if existing.get("source", {}).get("etag") == etag else None

    def _infer(self, jobs: list[_Job]) -> None:
        ready = [job for job in jobs if job.outcome is None and job.image is not None]
        if not ready:
            return
        started = time.perf_counter()
        try:
            predictions = self.classifier.predict(np.stack([job.image for job in ready]))  # type: ignore[misc]
        except Exception as exc:  # noqa: BLE001 - the whole batch failed; retry it later
            for job in ready:
                job.finish(Status.FAILED, error=exc)
            return
        elapsed = _ms_since(started)
        for job, prediction in zip(ready, predictions, strict=True):
            job.prediction = prediction
            job.timings["inference"] = elapsed
            job.batch_size = len(ready)

    def _write(self, job: _Job) -> None:
        if isinstance(job.error, (ObjectNotFoundError, AccessDeniedError)) and job.result_exists:
            # A repeated delivery of a frame deleted (or hidden) since: keep the result it has.
            job.finish(Status.SKIPPED, error=job.error)
            return
        result = self._build_result(job)
        job.store.put(job.result_key, encode_result(result), content_type="application/json",
                      metadata=self._metadata(job))
        job.finish(Status.OK if job.error is None else Status.ERROR, result=result, error=job.error)

    def _metadata(self, job: _Job) -> dict[str, str]:
        metadata = {META_SOURCE_ETAG: job.etag or "", META_MODEL_VERSION: self.model_version}
        return {k: v for k, v in metadata.items() if v and v.isascii()}

    # -- the result document ------------------------------------------------------------

    def _build_result(self, job: _Job) -> dict[str, Any]:
        return self._clip_result(job) if job.annotated_key is not None else self._frame_result(job)

    def _envelope(self, job: _Job) -> dict[str, Any]:
        """The fields every result has, frame or clip."""
        manifest = self.classifier.manifest
        size = job.size
        if size is None and job.error is not None:
            size = job.error.context.get("size")  # ImageTooLargeError knows it from the GET
        return {
            "schema_version": RESULT_SCHEMA_VERSION,
            "status": Status.ERROR.value if job.error is not None else Status.OK.value,
            "source": {"bucket": job.ref.bucket, "key": job.ref.key, "etag": job.etag, "size": size,
                       "version_id": job.ref.version_id},
            "model": {"version": manifest.version, "backbone": manifest.backbone_name,
                      "input_size": list(manifest.input_size)},
            "timings_ms": dict(job.timings),
            "processed_at": iso_utc(self.clock()),
            "error": None if job.error is None else {"type": job.error.kind, "message": job.error.message},
        }

    def _frame_result(self, job: _Job) -> dict[str, Any]:
        manifest = self.classifier.manifest
        prediction = job.prediction
        return {
            **self._envelope(job),
            "kind": "frame",
            "label": prediction.label if prediction else None,
            "probability": prediction.probability if prediction else None,
            "probabilities": prediction.probabilities if prediction else None,
            "threshold": manifest.threshold,
            "positive_class": manifest.positive_class,
            "imagenet_top": prediction.imagenet_top if prediction else None,
            "batch_size": job.batch_size,
        }

    def _clip_result(self, job: _Job) -> dict[str, Any]:
        """The envelope, plus what process_video found (None throughout for an error result).

        ``timings_ms`` are the function's stages (download, process, upload); ``timings``
        is process_video's own breakdown in seconds, with frames per second.
        """
        envelope, video = self._envelope(job), job.video or {}
        if video:  # add the classes and threshold the summary was made with
            envelope["model"] = {**video["model"], **envelope["model"]}
        return {
            **envelope,
            "kind": "video",
            "annotated_key": job.annotated_key if video and job.error is None else None,
            **{part: video.get(part) for part in VIDEO_RESULT_PARTS},
        }


@contextlib.contextmanager
def _explain_denied(job: _Job) -> Iterator[None]:
    """Say what a 403 on reading the input means: a missing permission, or a deleted object."""
    what = "clip" if job.annotated_key is not None else "frame"
    try:
        yield
    except AccessDeniedError as exc:
        raise AccessDeniedError(
            f"Reading s3://{job.ref.bucket}/{job.ref.key} was denied: either the role lacks s3:GetObject "
            f"on INPUT_PREFIX, or the {what} was deleted before it was read (without s3:ListBucket, S3 "
            f"reports a missing key as denied); check the policy and whether the {what} still exists.",
            **exc.context) from exc


def process_video(clip: Path, classifier: Classifier, **kwargs: Any) -> dict[str, Any]:
    """:func:`functions.video.process_video`, imported when the first clip arrives."""
    from functions import video

    return video.process_video(clip, classifier, **kwargs)


def _head(store: ObjectStore, key: str) -> ObjectInfo | None:
    """HEAD that reads "absent" into a 403 as well as a 404.

    Without s3:ListBucket (which cannot be scoped to a prefix) S3 answers a HEAD of a
    missing key with 403, so least-privilege deployments see AccessDenied for "absent".
    """
    try:
        return store.head(key)
    except AccessDeniedError:
        return None


def encode_result(result: dict[str, Any]) -> bytes:
    return (json.dumps(result, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)
