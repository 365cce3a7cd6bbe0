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

from functions.events import ObjectRef
from shared.config import FunctionSettings
from shared.errors import settles_input

# The version of the result document (docs/schema/result.schema.json); bump it on a breaking change.
RESULT_SCHEMA_VERSION = 1
# results/<key relative to INPUT_PREFIX> + this: the annotated copy of a clip.
ANNOTATED_SUFFIX = ".annotated.mp4"
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
