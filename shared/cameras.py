"""Which camera a frame came from, read from its key: the one rule for ops and batch scoring.

Default: the first path part under the input prefix (``incoming/cam1/0001.jpg`` -> ``cam1``).
With a regex (``--camera-regex``): searched in the key below the input prefix; its first
group, or the whole match when it has no group, names the camera (the same convention as
``training.fit --group-by``).  A key with no folder, or that the regex does not match,
has camera :data:`NO_CAMERA` (``_``).
"""

from __future__ import annotations

import dataclasses
import re

from shared.config import normalise_prefix
from shared.errors import ConfigError

NO_CAMERA = "_"


@dataclasses.dataclass(frozen=True)
class CameraRule:
    input_prefix: str = "incoming/"
    regex: str | None = None
    _pattern: re.Pattern[str] | None = dataclasses.field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_prefix", normalise_prefix(self.input_prefix))
        if self.regex:
            try:
                object.__setattr__(self, "_pattern", re.compile(self.regex))
            except re.error as exc:
                raise ConfigError(f"--camera-regex {self.regex!r} is not a valid regular expression ({exc}); "
                                  "for example 'site-(\\d+)/'.", setting="camera_regex") from None

    def relative(self, key: str) -> str:
        """The key below the input prefix (the key itself when it lies elsewhere)."""
        return key[len(self.input_prefix):] if key.startswith(self.input_prefix) else key

    def camera(self, key: str) -> str:
        rel = self.relative(key)
        if self._pattern is not None:
            match = self._pattern.search(rel)
            if match is None:
                return NO_CAMERA
            return (match.group(1) if match.re.groups else match.group(0)) or NO_CAMERA
        head, sep, _ = rel.partition("/")
        return head if sep and head else NO_CAMERA


def camera_of(key: str, input_prefix: str = "incoming/", regex: str | re.Pattern[str] | None = None) -> str:
    """One-off form of :meth:`CameraRule.camera` (build a :class:`CameraRule` for many keys)."""
    return CameraRule(input_prefix, regex.pattern if isinstance(regex, re.Pattern) else regex).camera(key)
