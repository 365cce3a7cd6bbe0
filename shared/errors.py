"""The project's one error tree.

Every error carries its context (bucket, key, ...) and a message that is a whole
sentence saying what to do.  Two class attributes tell callers what to do with it:

* ``retryable``: whether a retry may help (transient faults are raised so they are retried;
  bad input is reported and skipped);
* ``settles_input``: whether a stored error result of this type settles its input, so a
  repeated delivery of the same bytes with the same model is skipped rather than redone.
  True for faults in the input itself (a bad image or clip), False for everything that a
  later attempt might get past (storage, configuration, the model).

Every subclass registers itself by name in :data:`ERROR_TYPES` as it is defined.  All of
the project's errors are defined in this module, so the registry is complete as soon as
``shared.errors`` is imported, whatever else has or has not been imported yet (the skip
check runs before the video code is loaded).
"""

from __future__ import annotations

from typing import Any, ClassVar

# Name -> class of every error below (and of any subclass defined later); see the module docstring.
ERROR_TYPES: dict[str, type[CCTVError]] = {}


class CCTVError(Exception):
    """Base class of every error this project raises on purpose."""

    exit_code: ClassVar[int] = 1
    retryable: ClassVar[bool] = False
    settles_input: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        ERROR_TYPES.setdefault(cls.__name__, cls)

    def __init__(self, message: str, **context: Any) -> None:
        super().__init__(message)
        self.message = message
        self.context = {k: v for k, v in context.items() if v is not None}

    @property
    def kind(self) -> str:
        return type(self).__name__

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, "message": self.message, **self.context}


ERROR_TYPES[CCTVError.__name__] = CCTVError


# -- configuration and usage --------------------------------------------------------


class ConfigError(CCTVError):
    """A setting is missing or inconsistent."""

    exit_code = 2


class WeightsNotFoundError(ConfigError):
    """The requested backbone weights are not on disk and cannot be downloaded here."""


# -- storage ------------------------------------------------------------------------


class StorageError(CCTVError):
    """S3 (or a compatible store) refused or failed a request."""

    exit_code = 2


class BucketNotFoundError(StorageError):
    pass


class CredentialsError(StorageError):
    pass


class AccessDeniedError(StorageError):
    pass


class ObjectNotFoundError(StorageError):
    """The object is gone (for example deleted between the event and the read)."""


class TransientStorageError(StorageError):
    """A 5xx, throttling or connection fault that outlived the retries; try again later."""

    exit_code = 4
    retryable = True


class PreconditionFailedError(StorageError):
    """A conditional write lost: the key exists (If-None-Match) or changed (If-Match) meanwhile.

    Not a fault in itself: another writer got there first.  Whether that answers the caller's
    write is for the caller to check (functions.jobs reads the stored result again).
    """


class ResultConflictError(StorageError):
    """A result written by a racing delivery does not answer this one (other bytes, another model).

    Retryable: the record is redelivered, and that attempt replaces the result (If-Match).
    """

    exit_code = 4
    retryable = True


class NoTimeLeftError(CCTVError):
    """The invocation was about to end before a clip could be started; it is retried."""

    retryable = True


class KeyTooLongError(StorageError):
    """The key is over S3's 1,024-byte (UTF-8) limit, so no object can ever be stored there."""


# -- input images -------------------------------------------------------------------


class InvalidImageError(CCTVError):
    """The bytes are not a usable image. Bad input: report it and move on."""

    exit_code = 2
    settles_input = True


class ImageTooLargeError(InvalidImageError):
    pass


class DecompressionBombError(InvalidImageError):
    pass


class TruncatedImageError(InvalidImageError):
    pass


class NotAnImageError(InvalidImageError):
    pass


class ImageTooLargeToDecodeError(InvalidImageError):
    """The frame's decode, estimated from its header, needs more than MAX_DECODE_MB, the most one frame may use.

    Settles its input, as the pixel and byte limits do: MAX_DECODE_MB is a per-frame limit on
    what inputs are accepted, and the same bytes would be refused again.  (Raising the setting
    applies to new uploads; a stored refusal is not redone.)
    """


class ImageTooLargeForMemoryError(ImageTooLargeToDecodeError):
    """The frame's decode needs more than the whole decode budget (shared.budget.DecodeBudget).

    That budget comes from the function's memory (its memory size, or FUNCTION_MEMORY_MB), not
    from the input: once the function has more memory the same bytes decode.  So it does not
    settle its input, and a redelivery after the memory is raised is processed again.
    """

    settles_input = False


# -- input clips (video mode) ---------------------------------------------------------


class InvalidVideoError(CCTVError):
    """The file is not a usable video. Bad input: report it and move on."""

    exit_code = 2
    settles_input = True


class VideoTooLargeError(InvalidVideoError):
    pass


class VideoTooLongError(InvalidVideoError):
    pass


class VideoTooManyFramesError(VideoTooLongError):
    """More frames than MAX_VIDEO_DECODED_FRAMES: a very high frame rate, or a header that
    understates the count.  Every frame is decoded and re-encoded, so this bounds the work."""


class NotAVideoError(InvalidVideoError):
    """FFmpeg cannot open the file at all (corrupt, cut short before its index, not a video)."""


class NoVideoStreamError(InvalidVideoError):
    pass


class UnsupportedCodecError(InvalidVideoError):
    pass


class EmptyVideoError(InvalidVideoError):
    pass


# -- events ---------------------------------------------------------------------------


class UnsupportedEventError(CCTVError):
    """The event (or one message in it) is not a shape this function understands."""

    exit_code = 2


# -- datasets and training ----------------------------------------------------------


class DatasetError(CCTVError):
    """The labelled dataset cannot be trained on as it is."""

    exit_code = 2


class TrainingError(CCTVError):
    """Training ran but its result must not be used."""

    exit_code = 3


class ChanceLevelError(TrainingError):
    pass


class ParityError(TrainingError):
    pass


class PromotionRefusedError(TrainingError):
    """The promotion gate found the new model worse than the promoted one (training.gate)."""

    exit_code = 5


class WeightsDownloadError(CCTVError):
    """Keras' downloader gave no verified weights file (training.weights_download); ``str()`` says why in
    one line, which ``training.keras_backbone`` puts into its WeightsNotFoundError."""

    exit_code = 2


# -- model bundles ------------------------------------------------------------------


class BundleError(CCTVError):
    exit_code = 3


class BundleNotFoundError(BundleError):
    pass


class BundleIntegrityError(BundleError):
    pass


class BundleIncompatibleError(BundleError):
    pass


# -- development tools --------------------------------------------------------------


class LocalStackError(CCTVError):
    """The local stack (devstack) could not do what was asked, for example train its bundle."""


# -- batch scoring (batch/) -----------------------------------------------------------


class BatchError(CCTVError):
    """A batch scoring job cannot start or did not finish."""

    exit_code: ClassVar[int] = 2


class JavaNotFoundError(BatchError):
    """Spark needs a Java runtime (17 or newer) and none was found."""


class NoInputError(BatchError):
    """Nothing matched the input prefix, the dates or the key list."""


class SparkJobError(BatchError):
    """The Spark job itself failed (not one frame: those get error rows)."""

    exit_code: ClassVar[int] = 5


def settles_input(type_name: str) -> bool:
    """Whether a stored error of this type name settles its input (unknown names do not)."""
    cls = ERROR_TYPES.get(type_name)
    return cls is not None and cls.settles_input
