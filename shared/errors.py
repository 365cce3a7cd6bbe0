"""The project's one error tree.

Every error carries its context (bucket, key, ...) and a message that is a whole
sentence saying what to do.  ``retryable`` tells callers whether a retry may help:
bad input is reported and skipped, transient faults are raised so they are retried.
"""

from __future__ import annotations

from typing import Any


class CCTVError(Exception):
    """Base class of every error this project raises on purpose."""

    exit_code = 1
    retryable = False

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


# -- input images -------------------------------------------------------------------


class InvalidImageError(CCTVError):
    """The bytes are not a usable image. Bad input: report it and move on."""

    exit_code = 2


class ImageTooLargeError(InvalidImageError):
    pass


class DecompressionBombError(InvalidImageError):
    pass


class TruncatedImageError(InvalidImageError):
    pass


class NotAnImageError(InvalidImageError):
    pass


# -- input clips (video mode) ---------------------------------------------------------


class InvalidVideoError(CCTVError):
    """The file is not a usable video. Bad input: report it and move on."""

    exit_code = 2


class VideoTooLargeError(InvalidVideoError):
    pass


class VideoTooLongError(InvalidVideoError):
    pass


class NotAVideoError(InvalidVideoError):
    """FFmpeg cannot open the file at all (corrupt, cut short before its index, not a video)."""


class NoVideoStreamError(InvalidVideoError):
    pass


class UnsupportedCodecError(InvalidVideoError):
    pass


class EmptyVideoError(InvalidVideoError):
    pass


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


# -- model bundles ------------------------------------------------------------------


class BundleError(CCTVError):
    exit_code = 3


class BundleNotFoundError(BundleError):
    pass


class BundleIntegrityError(BundleError):
    pass


class BundleIncompatibleError(BundleError):
    pass
