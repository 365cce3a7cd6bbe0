"""Clips (keys ending in .mp4, .avi, .mov or .mkv, any case), one at a time.

HEAD, size check, download to a private temp folder, classify and annotate with
:func:`functions.video.pipeline.process_video`, then ``results/<key>.annotated.mp4`` and,
last, ``results/<key>.json``, both conditionally, so that of racing deliveries only the one
whose JSON is written leaves its mp4 (see ``ClipService._upload_annotated``).
:mod:`functions.video` (and PyAV, inside ``process_video``) is imported when the first clip
arrives, so an event of frames never loads either.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, ClassVar

from functions.events import ObjectRef
from functions.jobs import Job, JobRunner, explain_denied, head_or_none, ms_since
from functions.results import VIDEO_PHASES, Outcome, Status, annotated_key_for
from shared.errors import NoTimeLeftError, ObjectNotFoundError, PreconditionFailedError
from shared.runtime import Classifier
from shared.storage import ObjectStore

# What a clip's result takes from process_video's answer (its model entry is merged into the
# envelope's, its timings_ms into the function's; its schema_version and kind are the envelope's own).
VIDEO_RESULT_PARTS = ("video", "sampling", "summary", "partial", "annotated", "throughput", "frames")
# Of the time an invocation has left when a clip starts, what decoding leaves for the rest:
# flushing the encoder, uploading the annotated mp4 and writing the result (10%, 2-30 s).
FINISH_SHARE, FINISH_MIN_S, FINISH_MAX_S = 0.1, 2.0, 30.0


@dataclasses.dataclass
class ClipJob(Job):
    what: ClassVar[str] = "clip"

    annotated_key: str = ""  # where the annotated mp4 goes
    # The ETag of the annotated mp4 stored when processing began (None: there was none): the
    # upload replaces only that one, so a delivery never overwrites an mp4 uploaded meanwhile.
    annotated_etag: str | None = None
    video: dict[str, Any] | None = None  # what process_video found
    deadline: float | None = None  # time.monotonic() by which decoding must stop (None: no limit)


class ClipService(JobRunner[ClipJob]):
    """Classifies and annotates one clip per call."""

    def run(self, ref: ObjectRef, *, deadline: float | None = None) -> Outcome:
        """Classify the clip ``ref``; ``deadline`` (``time.monotonic()``) is when the invocation ends."""
        job = self.new_job(ref)
        if isinstance(job, Outcome):
            return job
        job.deadline = decoding_deadline(deadline)
        self.guarded(self.process)(job)
        self.guarded(self.write)(job)
        return job.settle()

    def make_job(self, ref: ObjectRef, result_key: str, store: ObjectStore, started: float) -> ClipJob:
        annotated_key = annotated_key_for(self.settings, ref.key)
        assert annotated_key is not None  # result_key_for accepted the key, so this does too
        return ClipJob(ref, result_key, store, started, ref.etag, ref.size, annotated_key=annotated_key)

    # -- stages -------------------------------------------------------------------------

    def process(self, job: ClipJob) -> None:
        """Skip a repeated delivery; otherwise check the size, then classify in a private folder."""
        if self.skip_if_done(job) or not self._model_ready(job):
            return
        stored_mp4 = head_or_none(job.store, job.annotated_key)
        job.annotated_etag = None if stored_mp4 is None else stored_mp4.etag
        with explain_denied(job):
            info = job.store.head(job.ref.key)
        if info is None:
            raise ObjectNotFoundError(f"s3://{job.ref.bucket}/{job.ref.key} does not exist (it may have been "
                                      "deleted before it was read).", bucket=job.ref.bucket, key=job.ref.key)
        job.etag, job.size = info.etag, info.size
        from functions.video.reading import check_video_size, video_workspace

        check_video_size(info.size, self.settings.video, job.ref.key)  # before a byte is downloaded
        with video_workspace() as (clip, annotated):
            self._classify(job, clip, annotated)

    def _classify(self, job: ClipJob, clip: Path, annotated: Path) -> None:
        """Download, classify and annotate, upload the annotated mp4 (the JSON comes after, in write)."""
        limits = self.settings.video
        check_time_left(job, "download")  # a download of up to MAX_VIDEO_BYTES would be wasted
        started = time.perf_counter()
        with explain_denied(job):
            data = job.store.download(job.ref.key, clip, max_bytes=limits.max_bytes)
        job.timings["download"] = ms_since(started)
        job.etag, job.size = data.etag, data.size
        check_time_left(job, "decode")
        started = time.perf_counter()
        job.video = process_video(clip, self.classifier, out_path=annotated, limits=limits, name=job.ref.key,
                                  deadline=job.deadline)
        job.timings["process"] = ms_since(started)
        self._upload_annotated(job, annotated)

    def _upload_annotated(self, job: ClipJob, annotated: Path) -> None:
        """Upload the annotated mp4, unless another delivery has written this clip's results meanwhile.

        The mp4 goes first so the JSON never names a missing file, but only the delivery whose
        JSON wins may leave its mp4 there.  So, right before the upload: a result written since
        the skip check settles the job here (skipped if it answers this delivery, else retried),
        and the upload itself is conditional on the mp4 read when processing began: another
        delivery's mp4 uploaded meanwhile is left alone and this delivery writes no JSON either.
        """
        if self.result_changed(job):
            return
        started = time.perf_counter()
        try:
            job.store.put_file(job.annotated_key, annotated, content_type="video/mp4", metadata=self.metadata(job),
                               if_none_match=job.annotated_etag is None, if_match=job.annotated_etag)
        except PreconditionFailedError:
            if not self.after_lost_write(job):  # its JSON is not there yet: the redelivery finds it (or redoes it)
                self.conflict(job, f"s3://{job.ref.bucket}/{job.annotated_key} was uploaded meanwhile by another "
                                   "delivery, whose result is not written yet")
            return
        job.timings["upload"] = ms_since(started)

    def _model_ready(self, job: ClipJob) -> bool:
        """Wait for the model, which may still be loading; if that failed, the clip is retried.

        Whatever the loading error (a damaged bundle, a storage fault), it is not the clip's
        fault, so it must never end up in the clip's result (frames get the same in infer).
        """
        try:
            self.classifier.wait()
        except Exception as exc:  # noqa: BLE001 - any loading failure: retry the record later
            job.finish(Status.FAILED, error=exc)
            return False
        return True

    # -- the result document ------------------------------------------------------------

    def build_result(self, job: ClipJob) -> dict[str, Any]:
        """The envelope, plus what process_video found (None throughout for an error result).

        ``timings_ms`` holds the function's stages (download, process, upload) and
        process_video's own phases within ``process`` (decode, inference, encode).
        """
        envelope, video = self.envelope(job), job.video or {}
        if video:  # add the classes and threshold the summary was made with, and the phases
            envelope["model"] = {**video["model"], **envelope["model"]}
            phases = video.get("timings_ms") or {}
            envelope["timings_ms"] = {**{k: phases[k] for k in VIDEO_PHASES if k in phases}, **job.timings}
        return {
            **envelope,
            "kind": "video",
            "annotated_key": job.annotated_key if video and job.error is None else None,
            **{part: video.get(part) for part in VIDEO_RESULT_PARTS},
        }


def check_time_left(job: ClipJob, step: str) -> None:
    """Refuse to start ``step`` once the decoding deadline has passed: the clip is retried."""
    if job.deadline is not None and time.monotonic() >= job.deadline:
        raise NoTimeLeftError(f"No time was left in this invocation to {step} s3://{job.ref.bucket}/{job.ref.key}; "
                              "it is retried. If this repeats, raise the clip function's timeout.",
                              bucket=job.ref.bucket, key=job.ref.key)


def decoding_deadline(deadline: float | None) -> float | None:
    """When decoding must stop so the clip's result is written before ``deadline``."""
    if deadline is None:
        return None
    left = deadline - time.monotonic()
    return deadline - min(FINISH_MAX_S, max(FINISH_MIN_S, FINISH_SHARE * left))


def process_video(clip: Path, classifier: Classifier, **kwargs: Any) -> dict[str, Any]:
    """:func:`functions.video.pipeline.process_video`, imported when the first clip arrives."""
    from functions.video import pipeline

    return pipeline.process_video(clip, classifier, **kwargs)
