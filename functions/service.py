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
from functions.results import (
    Outcome,
    Status,
    annotated_key_for,
    encode_result,
    handled_here,
    is_final,
    result_key_for,
)
from shared.clock import Clock, utc_now
from shared.config import FunctionSettings
from shared.runtime import Classifier

# Why a record is left alone when FUNCTION_ROLE splits frames and clips between two functions.
ELSEWHERE = {"frames": "A clip: the clip function (FUNCTION_ROLE=clips) classifies it.",
             "clips": "Not a clip: the frame function (FUNCTION_ROLE=frames) classifies it.", "all": ""}


def left_alone(settings: FunctionSettings, ref: ObjectRef) -> Outcome | None:
    """The outcome of a record this deployment does not process (IGNORED, with why), or None."""
    if result_key_for(settings, ref.key) is None:
        return Outcome(ref, Status.IGNORED)  # outside the input prefix, or a folder marker
    if not handled_here(settings, ref.key):
        return Outcome(ref, Status.IGNORED, reason=ELSEWHERE[settings.role])
    return None


__all__ = ["ClassifyService", "Outcome", "Status", "StoreFactory", "annotated_key_for", "encode_result",
           "handled_here", "is_final", "left_alone", "result_key_for"]


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

    def run(self, refs: Sequence[ObjectRef], *, deadline: float | None = None) -> list[Outcome]:
        """One outcome per ref, in order; never raises for a single bad record.

        ``deadline`` (``time.monotonic()`` seconds) is when the invocation is cut off: a clip
        stops decoding in time to write a partial result before it.
        """
        outcomes = {i: outcome for i, ref in enumerate(refs) if (outcome := left_alone(self.settings, ref))}
        frames = [i for i, ref in enumerate(refs) if i not in outcomes and not is_video_key(ref.key)]
        outcomes.update(zip(frames, self.frames.run([refs[i] for i in frames]), strict=True))
        for i, ref in enumerate(refs):
            if i not in outcomes:
                outcomes[i] = self.clips.run(ref, deadline=deadline)
        return [outcomes[i] for i in range(len(refs))]
