"""What frames and clips have in common on their way to a result document.

A :class:`Job` is the working state of one record; a :class:`JobRunner` holds the
stages both kinds share: the skip check for repeated deliveries, turning exceptions
into outcomes, the fields every result has, and writing the result.  The frame and clip
runners (:mod:`functions.frames`, :mod:`functions.clips`) add their own stages and
result fields.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, Generic, TypeVar

from functions.events import ObjectRef
from functions.results import (
    META_MODEL_VERSION,
    META_SOURCE_ETAG,
    RESULT_SCHEMA_VERSION,
    Outcome,
    Status,
    encode_result,
    is_final,
    result_key_for,
)
from shared.clock import Clock, iso_utc, utc_now
from shared.config import FunctionSettings
from shared.errors import (
    AccessDeniedError,
    CCTVError,
    ObjectNotFoundError,
    PreconditionFailedError,
    ResultConflictError,
)
from shared.runtime import Classifier
from shared.storage import ObjectInfo, ObjectStore

StoreFactory = Callable[[str], ObjectStore]


@dataclasses.dataclass
class Job:
    """Mutable working state of one record while its event is processed."""

    # What the input is called in messages ("frame", "clip").
    what: ClassVar[str] = "object"

    ref: ObjectRef
    result_key: str
    store: ObjectStore
    started: float
    etag: str | None = None
    size: int | None = None
    timings: dict[str, float] = dataclasses.field(default_factory=dict)  # milliseconds per stage
    result_exists: bool = False
    # The ETag of the stored result when there is one (from the skip check's HEAD): a
    # replacement is written only if the result still has it (If-Match).
    result_etag: str | None = None
    error: CCTVError | None = None
    outcome: Outcome | None = None

    def finish(self, status: Status, *, result: dict[str, Any] | None = None,
               error: BaseException | None = None, reason: str | None = None) -> None:
        self.outcome = Outcome(self.ref, status, self.result_key, result, error,
                               round((time.perf_counter() - self.started) * 1000, 1), reason)

    def settle(self) -> Outcome:
        """The job's outcome; a job that never got one could not write its result."""
        if self.outcome is None:
            self.finish(Status.FAILED, error=self.error)
        assert self.outcome is not None
        return self.outcome


J = TypeVar("J", bound=Job)


class JobRunner(Generic[J]):
    """The stages every record goes through, whatever its kind."""

    def __init__(self, settings: FunctionSettings, stores: StoreFactory, classifier: Classifier,
                 clock: Clock = utc_now) -> None:
        self.settings = settings
        self.stores = stores
        self.classifier = classifier
        self.clock = clock

    @property
    def model_version(self) -> str:
        return self.classifier.manifest.version

    def new_job(self, ref: ObjectRef) -> J | Outcome:
        """A job for ``ref``, or its outcome already when it is not to be processed."""
        result_key = result_key_for(self.settings, ref.key)
        if result_key is None:
            return Outcome(ref, Status.IGNORED)
        return self.make_job(ref, result_key, self.stores(ref.bucket), time.perf_counter())

    def make_job(self, ref: ObjectRef, result_key: str, store: ObjectStore, started: float) -> J:
        raise NotImplementedError

    def build_result(self, job: J) -> dict[str, Any]:
        raise NotImplementedError

    @staticmethod
    def guarded(step: Callable[[J], None]) -> Callable[[J], None]:
        """Run ``step`` unless the job is settled; turn any exception into the job's outcome."""
        def run(job: J) -> None:
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

    def skip_if_done(self, job: J) -> bool:
        """Settle the job as SKIPPED when a stored result already answers this delivery."""
        existing = self._existing_result(job)
        if existing is None:
            return False
        job.finish(Status.SKIPPED, result=existing)
        return True

    def _existing_result(self, job: J) -> dict[str, Any] | None:
        """The stored result if it already answers this delivery (same bytes, same model)."""
        stored = head_or_none(job.store, job.result_key)
        if stored is None:
            job.result_exists, job.result_etag = False, None
            return None  # the usual case: one cheap HEAD and on we go
        job.result_exists, job.result_etag = True, stored.etag
        try:
            existing: dict[str, Any] = job.store.get_json(job.result_key)
        except ObjectNotFoundError:
            job.result_exists, job.result_etag = False, None  # deleted meanwhile: write it afresh
            return None
        except ValueError:
            return None  # unreadable: replace it (if it is still the one read)
        if existing.get("model", {}).get("version") != self.model_version or not is_final(existing):
            return None
        etag = job.etag
        if etag is None:  # Yandex events carry no ETag: ask the store
            info = head_or_none(job.store, job.ref.key)
            if info is None:
                return existing  # the input is gone; keep what was computed from it
            etag = info.etag
        return existing if existing.get("source", {}).get("etag") == etag else None

    def write(self, job: J) -> None:
        """Write the job's result document (ok or error) and settle the job."""
        if isinstance(job.error, (ObjectNotFoundError, AccessDeniedError)) and job.result_exists:
            # A repeated delivery of an input deleted (or hidden) since: keep the result it has.
            job.finish(Status.SKIPPED, error=job.error)
            return
        result = self.build_result(job)
        # Conditional, so racing deliveries of one input write its result once: the first write
        # only if there is none yet (If-None-Match: *), a replacement (another model, an error
        # that did not settle the input) only if it is still the one read (If-Match).  A lost
        # race is settled by what is stored now (see after_lost_write), at most twice: the
        # second try is for a result deleted between the read and the write.
        for _ in range(2):
            try:
                job.store.put(job.result_key, encode_result(result), content_type="application/json",
                              metadata=self.metadata(job), if_none_match=job.result_etag is None,
                              if_match=job.result_etag)
            except PreconditionFailedError:
                if self.after_lost_write(job):
                    return
                continue
            job.finish(Status.OK if job.error is None else Status.ERROR, result=result, error=job.error)
            return
        self.conflict(job)

    def after_lost_write(self, job: J) -> bool:
        """Settle a job whose conditional write lost; False when the result is absent (write it afresh).

        Losing only says that the stored result changed, not that it answers this delivery: it
        may have been deleted (the If-Match 404), or written by a delivery of older bytes or of
        another model.  So the skip check runs again: SKIPPED only if the stored result answers
        this delivery; none at all: try again with If-None-Match; any other: FAILED, so the
        platform redelivers and the next attempt replaces it (If-Match on the ETag it reads).
        """
        existing = self._existing_result(job)
        if existing is not None:
            job.finish(Status.SKIPPED, result=existing,
                       reason="Another delivery of this input wrote its result meanwhile.")
            return True
        if not job.result_exists:
            return False
        self.conflict(job)
        return True

    def result_changed(self, job: J) -> bool:
        """Settle the job, as a lost write, if its result changed since the skip check read it.

        For a write that comes before the result's own (the clip's mp4): a delivery whose
        result write would lose must not write anything else either.
        """
        stored = head_or_none(job.store, job.result_key)
        if (None if stored is None else stored.etag) == job.result_etag:
            return False
        return self.after_lost_write(job)

    def conflict(self, job: J, what: str | None = None) -> None:
        """End the job FAILED (retried): another delivery's write stands in the way of this one's."""
        what = what or (f"s3://{job.ref.bucket}/{job.result_key} was written meanwhile by another delivery, and what "
                        "it holds does not answer this one (other bytes, another model, or an error that does not "
                        "settle the input)")
        job.finish(Status.FAILED, error=ResultConflictError(
            f"{what}; this record is retried so that a later attempt replaces it (or finds it answered).",
            bucket=job.ref.bucket, key=job.result_key))

    def metadata(self, job: J) -> dict[str, str]:
        metadata = {META_SOURCE_ETAG: job.etag or "", META_MODEL_VERSION: self.model_version}
        return {k: v for k, v in metadata.items() if v and v.isascii()}

    def envelope(self, job: J) -> dict[str, Any]:
        """The fields every result has, frame or clip."""
        manifest = self.classifier.manifest
        size = job.size
        if size is None and job.error is not None:
            size = job.error.context.get("size")  # ImageTooLargeError knows it from the GET
        model: dict[str, Any] = {"version": manifest.version, "backbone": manifest.backbone_name,
                                 "input_size": list(manifest.input_size)}
        envelope: dict[str, Any] = {
            "schema_version": RESULT_SCHEMA_VERSION,
            "status": Status.ERROR.value if job.error is not None else Status.OK.value,
            "source": {"bucket": job.ref.bucket, "key": job.ref.key, "etag": job.etag, "size": size,
                       "version_id": job.ref.version_id},
            "model": model,
            "timings_ms": dict(job.timings),
            "processed_at": iso_utc(self.clock()),
            "error": None if job.error is None else {"type": job.error.kind, "message": job.error.message},
        }
        if manifest.weights_source == "random":  # a smoke model must never pass for a real one
            model["weights"] = "random"
            envelope["warning"] = RANDOM_WEIGHTS_WARNING
        return envelope


RANDOM_WEIGHTS_WARNING = ("This model was trained on random backbone weights (a smoke run): its labels mean nothing. "
                          "Retrain with ImageNet weights (network access, or a Keras cache via KERAS_HOME).")


@contextlib.contextmanager
def explain_denied(job: Job) -> Iterator[None]:
    """Say what a 403 on reading the input means: a missing permission, or a deleted object."""
    try:
        yield
    except AccessDeniedError as exc:
        raise AccessDeniedError(
            f"Reading s3://{job.ref.bucket}/{job.ref.key} was denied: either the role lacks s3:GetObject "
            f"on INPUT_PREFIX, or the {job.what} was deleted before it was read (without s3:ListBucket, S3 "
            f"reports a missing key as denied); check the policy and whether the {job.what} still exists.",
            **exc.context) from exc


def head_or_none(store: ObjectStore, key: str) -> ObjectInfo | None:
    """HEAD that reads "absent" into a 403 as well as a 404.

    Without s3:ListBucket (which cannot be scoped to a prefix) S3 answers a HEAD of a
    missing key with 403, so least-privilege deployments see AccessDenied for "absent".
    """
    try:
        return store.head(key)
    except AccessDeniedError:
        return None


def ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)
