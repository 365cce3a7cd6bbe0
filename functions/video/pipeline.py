"""The clip pipeline: decoded frames are sampled, batched through the classifier and, when
asked, annotated and encoded, one at a time, so memory is bounded by a batch and a few
pending frames, never by the clip.  :func:`process_video` is the whole job on a local file.
"""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from functions.video.reading import (
    DecodedFrame,
    FrameReader,
    Sampler,
    VideoInfo,
    check_video_info,
    check_video_size,
    frame_bytes,
    open_video,
    plan_sampling,
    quoted,
)
from functions.video.result import IMAGENET_SUMMARY_TOP, build_result
from shared.config import VideoLimits
from shared.errors import EmptyVideoError, NotAVideoError, NoTimeLeftError
from shared.imaging import fit_to_input

BATCH_SIZE = 16
# Decoded frames wait, unannotated, until their sampled frame is classified; bound the
# bytes they hold (7 frames of 1080p, 48 of 640x480) rather than their count.
PENDING_BYTES = 64 * 1024 * 1024
MAX_PENDING_FRAMES = 4 * BATCH_SIZE
FRAME_IMAGENET_TOP = 3


class FrameClassifier(Protocol):
    """What video mode needs of :class:`shared.runtime.Classifier`."""

    manifest: Any

    @property
    def input_size(self) -> tuple[int, int]: ...

    def predict(self, images: np.ndarray, *, top_k: int = 3) -> list[Any]: ...


# -- classification and annotation --------------------------------------------------------------


class Timer:
    """Seconds spent per phase, by an injected clock."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.spent: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        start = self.clock()
        try:
            yield
        finally:
            self.spent[phase] += self.clock() - start


def frame_record(index: int, time_s: float, prediction: Any, positive: str | None) -> dict[str, Any]:
    top = prediction.imagenet_top
    return {"frame": index, "time_s": round(time_s, 4), "label": prediction.label,
            "probability": prediction.probability,
            "positive_probability": prediction.probabilities.get(positive) if positive else None,
            "imagenet_top": None if top is None else top[:FRAME_IMAGENET_TOP]}


class Pipeline:
    """Sampled frames go to the classifier in batches; every frame goes to the writer once
    the prediction it should show (the latest sampled one) is known."""

    def __init__(self, classifier: FrameClassifier, sampler: Sampler, timer: Timer, *, writer: Any = None,
                 batch_size: int = BATCH_SIZE, max_pending: int = MAX_PENDING_FRAMES,
                 max_pending_bytes: int = PENDING_BYTES) -> None:
        self.classifier, self.sampler, self.timer, self.writer = classifier, sampler, timer, writer
        self.batch_size, self.max_pending, self.max_pending_bytes = batch_size, max_pending, max_pending_bytes
        self._pending_bytes = 0  # by the frames' real sizes: a header can understate them
        self.positive = classifier.manifest.positive_class
        self.records: list[dict[str, Any]] = []
        self.imagenet_sums: dict[str, float] = defaultdict(float)
        self._batch: list[tuple[int, float, np.ndarray]] = []
        self._pending: list[DecodedFrame] = []
        self._shown = 0  # records[:_shown] have been reached by the writer

    def feed(self, item: DecodedFrame) -> None:
        if self.sampler.take(item.time_s):
            with self.timer("decode"):  # conversion and resizing count as decoding
                self._batch.append((item.index, item.time_s,
                                    fit_to_input(item.image(), self.classifier.input_size)))
        if self.writer is not None:
            self._pending.append(item)
            self._pending_bytes += item.nbytes
        if len(self._batch) >= self.batch_size or len(self._pending) >= self.max_pending \
                or self._pending_bytes >= self.max_pending_bytes:
            self.flush()

    def flush(self) -> None:
        self._classify()
        self._annotate()

    def _classify(self) -> None:
        if not self._batch:
            return
        with self.timer("inference"):
            predictions = self.classifier.predict(np.stack([a for _, _, a in self._batch]),
                                                  top_k=IMAGENET_SUMMARY_TOP)
        for (index, time_s, _), prediction in zip(self._batch, predictions, strict=True):
            self.records.append(frame_record(index, time_s, prediction, self.positive))
            for entry in prediction.imagenet_top or ():
                self.imagenet_sums[entry["class"]] += entry["probability"]
        self._batch.clear()

    def _annotate(self) -> None:
        for item in self._pending:
            while self._shown < len(self.records) and self.records[self._shown]["frame"] <= item.index:
                self._shown += 1
            # The first frame is always sampled, so every frame has a prediction to show.
            record = self.records[self._shown - 1]
            bar = record["positive_probability"] if self.positive else record["probability"]
            with self.timer("encode"):
                self.writer.write(item.image(), label=record["label"],
                                  probability=record["probability"], bar_value=bar)
        self._pending.clear()
        self._pending_bytes = 0


def max_pending_frames(info: VideoInfo) -> int:
    return max(1, min(MAX_PENDING_FRAMES, PENDING_BYTES // frame_bytes(info.width, info.height)))


def run_frames(frames: Iterable[DecodedFrame], pipeline: Pipeline, timer: Timer) -> None:
    """Pull frames one at a time (timed as decoding) and push each through the pipeline."""
    it = iter(frames)
    while True:
        with timer("decode"):
            item = next(it, None)
        if item is None:
            break
        pipeline.feed(item)
    pipeline.flush()


# -- the whole job ------------------------------------------------------------------------------


def _file_size(path: Path, name: str) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        raise NotAVideoError(f"{path} does not exist; check the path to the clip.", key=name) from None


def _writer(out_path: Path | None, info: VideoInfo, manifest: Any) -> Any:
    if out_path is None:
        return None
    from functions.annotate import AnnotatedWriter

    return AnnotatedWriter(out_path, info.fps or Fraction(25), bar_name=manifest.positive_class,
                           threshold=manifest.threshold)


def process_video(path_in: Path, classifier: FrameClassifier, *, out_path: Path | None = None,
                  limits: VideoLimits | None = None, clock: Callable[[], float] = time.perf_counter,
                  name: str | None = None, batch_size: int = BATCH_SIZE,
                  deadline: float | None = None) -> dict[str, Any]:
    """Classify the clip at ``path_in``; write the annotated mp4 to ``out_path`` when given.

    ``name`` (the object key, say) is only used in messages.  At ``deadline``
    (``time.monotonic()``) decoding stops and the result is partial, saying so.  Raises an
    ``InvalidVideoError`` subclass for a clip that cannot be used at all; a clip that
    stops decoding part-way gives the frames it has and a ``partial`` entry.
    """
    started = clock()
    limits = limits or VideoLimits()
    name = name or path_in.name
    size = _file_size(path_in, name)
    check_video_size(size, limits, name)
    timer = Timer(clock)
    with open_video(path_in, name, size) as (container, stream, info):
        check_video_info(info, limits, name)
        plan = plan_sampling(info, limits)
        reader = FrameReader(container, stream, info, max_duration_s=limits.max_duration_s, name=name,
                             max_frames=limits.decoded_frames_limit, max_pixels=limits.max_pixels,
                             deadline=deadline)
        writer = _writer(out_path, info, classifier.manifest)
        pipeline = Pipeline(classifier, Sampler(plan), timer, writer=writer, batch_size=batch_size,
                            max_pending=max_pending_frames(info))
        _run_and_finish(reader, pipeline, timer, writer, name)
    return build_result(info, plan, reader, pipeline, classifier.manifest, timer, total_s=clock() - started)


def _run_and_finish(reader: FrameReader, pipeline: Pipeline, timer: Timer, writer: Any, name: str) -> None:
    try:
        run_frames(reader, pipeline, timer)
        if reader.decoded == 0 and reader.out_of_time:
            # Nothing is known about the clip yet: an EmptyVideoError would settle it (and skip
            # every later delivery), although only this invocation's time ran out.
            raise NoTimeLeftError(f"The time left in this invocation ran out before the first frame of {quoted(name)} "
                                  "was decoded; it is retried. If this repeats, raise the clip function's timeout.",
                                  key=name)
        if reader.decoded == 0:
            raise EmptyVideoError(f"{quoted(name)} has no video frames that could be decoded{reader.ffmpeg_note}; "
                                  f"{reader.diagnosis_of_nothing()}", key=name)
        if writer is not None:
            with timer("encode"):
                writer.close()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
