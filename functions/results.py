"""The vocabulary of results: where a result goes, what a record ends in, and whether a
stored result settles its input.

Shared by the frame and clip services and by the video code; it imports nothing heavy,
so routing a frame never loads the video code through it.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from typing import Any

from functions.events import ObjectRef, is_video_key
from shared.config import FunctionSettings
from shared.errors import settles_input
from shared.storage import derived_key

# The version of the result document (docs/schema/result.schema.json); bump it on a breaking change.
RESULT_SCHEMA_VERSION = 1
# results/<key relative to INPUT_PREFIX> + this: the annotated copy of a clip.
ANNOTATED_SUFFIX = ".annotated.mp4"
# process_video's phases (functions/video/result.py), as keys of a clip's timings_ms: they break
# its "process" stage down, so a sum of the stages must not add them again.
VIDEO_PHASES = ("decode", "inference", "encode")
# S3 user metadata on each result, so a HEAD shows what a result was computed from.
META_SOURCE_ETAG = "source-etag"
META_MODEL_VERSION = "model-version"


class Status(str, enum.Enum):
    OK = "ok"            # classified; result written
    ERROR = "error"      # bad input; an error result was written, no retry
    SKIPPED = "skipped"  # an equivalent result already exists (repeated delivery)
    IGNORED = "ignored"  # outside INPUT_PREFIX; nothing written
    FAILED = "failed"    # transient or unexpected fault; nothing written, must be retried


@dataclasses.dataclass(frozen=True)
class Outcome:
    """How one record ended; ``result`` is the document written (or found, when skipped)."""

    ref: ObjectRef
    status: Status
    result_key: str | None = None
    result: dict[str, Any] | None = None
    error: BaseException | None = None
    ms: float = 0.0
    reason: str | None = None  # why an IGNORED or SKIPPED record was left alone, when it is not the usual

    @property
    def needs_retry(self) -> bool:
        return self.status is Status.FAILED


def result_key_for(settings: FunctionSettings, key: str) -> str | None:
    """``results/<key relative to the input prefix>.json``, or None for keys not to process.

    A key near S3's 1,024-byte limit would give a result key over it (which S3 refuses with
    KeyTooLongError, so the input would never get a result); its result goes to
    ``results/_long/<sha256 of the input key>.json`` instead (see shared.storage.derived_key).
    """
    if not key.startswith(settings.input_prefix) or key.endswith("/"):
        return None  # outside the input prefix, or a "folder" marker object
    return derived_key(settings.results_prefix, key[len(settings.input_prefix):], ".json", source_key=key)


def annotated_key_for(settings: FunctionSettings, key: str) -> str | None:
    """``results/<key relative to the input prefix>.annotated.mp4``, or None for keys not to process.

    Always under RESULTS_PREFIX, which may not overlap INPUT_PREFIX (FunctionSettings
    refuses that), so writing it can never trigger the function again.  Too long a key
    falls back to ``results/_long/<sha256 of the input key>.annotated.mp4``.
    """
    if result_key_for(settings, key) is None:
        return None
    return derived_key(settings.results_prefix, key[len(settings.input_prefix):], ANNOTATED_SUFFIX, source_key=key)


def handled_here(settings: FunctionSettings, key: str) -> bool:
    """Whether this deployment takes ``key``: FUNCTION_ROLE=frames leaves clips to the clip function."""
    if settings.role == "all":
        return True
    return is_video_key(key) == (settings.role == "clips")


def is_final(result: dict[str, Any]) -> bool:
    """Whether a stored result settles its input: ok, or an error its type declares settling.

    Errors in the image or clip itself settle it; storage errors (deleted, access denied)
    do not: a later delivery of the same bytes must be processed again rather than skipped.
    The type is looked up in :data:`shared.errors.ERROR_TYPES`, complete once shared.errors
    is imported, so this answers the same in a fresh container as in a warm one.
    """
    if result.get("status") == Status.OK.value:
        return True
    return settles_input(str((result.get("error") or {}).get("type")))


def encode_result(result: dict[str, Any]) -> bytes:
    return (json.dumps(result, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()
