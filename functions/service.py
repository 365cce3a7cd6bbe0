"""The core of the function: object references in, one result document per input out.

No platform event shapes, no environment and no model loading here: the caller hands
in the settings, a store per bucket, a classifier (whose sessions may still be opening
on a thread: only inference waits for them) and a clock.  Each record ends in exactly
one :class:`Outcome`; a bad record never affects the others.

:class:`ClassifyService` is the one entry point (the handler, batch jobs and ops tools
call ``ClassifyService(settings, stores, classifier, clock).run(refs)``); it sends still
frames to :class:`functions.frames.FrameService` (batched) and clips to
:class:`functions.clips.ClipService` (one at a time).  The result vocabulary
(:class:`Outcome`, :class:`Status`, :func:`result_key_for`, :func:`encode_result`,
:func:`is_final`) lives in :mod:`functions.results` and is part of this module's API.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from functions.clips import ClipService
from functions.events import ObjectRef, is_video_key
from functions.frames import FrameService
from functions.jobs import StoreFactory
from functions.results import Outcome, Status, annotated_key_for, encode_result, is_final, result_key_for
from shared.clock import Clock, utc_now
from shared.config import FunctionSettings
from shared.runtime import Classifier

__all__ = ["ClassifyService", "Outcome", "Status", "StoreFactory", "annotated_key_for", "encode_result",
           "is_final", "result_key_for"]


class ClassifyService:
    """Classifies the records of one event with a given classifier: frames first, then clips."""

    # The runners of each kind (a benchmark swaps in another frame runner through a subclass).
    frame_service: ClassVar[type[FrameService]] = FrameService
    clip_service: ClassVar[type[ClipService]] = ClipService

    def __init__(self, settings: FunctionSettings, stores: StoreFactory, classifier: Classifier,
                 clock: Clock = utc_now) -> None:
        self.settings = settings
        self.frames = self.frame_service(settings, stores, classifier, clock)
        self.clips = self.clip_service(settings, stores, classifier, clock)

    def run(self, refs: Sequence[ObjectRef]) -> list[Outcome]:
        """One outcome per ref, in order; never raises for a single bad record."""
        frames = [i for i, ref in enumerate(refs) if not is_video_key(ref.key)]
        outcomes = dict(zip(frames, self.frames.run([refs[i] for i in frames]), strict=True))
        for i, ref in enumerate(refs):
            if i not in outcomes:
                outcomes[i] = self.clips.run(ref)
        return [outcomes[i] for i in range(len(refs))]
