"""One flat :class:`Record` per result, whatever it came from (a result document or a table row)."""

from __future__ import annotations

import dataclasses
import re
from datetime import datetime, timedelta
from typing import Any

from shared.cameras import CameraRule
from shared.clock import iso_utc, parse_time

# Statuses a result can have; the function writes ok and error, the batch table may add these.
STATUSES = ("ok", "error", "skipped", "failed")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclasses.dataclass(frozen=True)
class Record:
    key: str                      # the input key (source.key)
    result_key: str
    camera: str
    status: str
    kind: str                     # frame or video
    label: str | None
    probability: float | None     # of the chosen label
    positive_probability: float | None  # binary heads: the positive class's score
    threshold: float | None
    positive_class: str | None
    error_type: str | None
    error_message: str | None
    processed_at: datetime | None
    model_version: str | None
    latency_ms: float | None      # the function's stages, summed
    source_etag: str | None
    annotated_key: str | None = None
    doc: dict[str, Any] | None = dataclasses.field(default=None, compare=False, repr=False)

    @property
    def margin(self) -> float | None:
        """How far the decision was from flipping: |score - threshold| (binary), else top - 0.5."""
        if self.positive_probability is not None and self.threshold is not None:
            return abs(self.positive_probability - self.threshold)
        return None if self.probability is None else self.probability - 0.5

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.pop("doc")
        out["processed_at"] = iso(self.processed_at)
        return out


# What ops reads of a result document; the rest (ImageNet classes, a clip's per-frame
# timeline) is left out of the cache and of memory: a clip's frames can run to megabytes.
_KEEP = ("schema_version", "status", "kind", "source", "error", "model", "positive_class", "threshold", "label",
         "probability", "probabilities", "timings_ms", "processed_at", "annotated_key", "partial")
_KEEP_SUMMARY = ("dominant_label", "label_share", "segments")
_KEEP_VIDEO = ("duration_s", "frames_sampled", "width", "height", "fps")


def slim(doc: Any) -> Any:
    """The parts of a result document ops uses (anything not a dict is passed through)."""
    if not isinstance(doc, dict):
        return doc
    out = {k: doc[k] for k in _KEEP if k in doc}
    if isinstance(doc.get("summary"), dict):
        out["summary"] = {k: doc["summary"][k] for k in _KEEP_SUMMARY if k in doc["summary"]}
    if isinstance(doc.get("video"), dict):
        out["video"] = {k: doc["video"][k] for k in _KEEP_VIDEO if k in doc["video"]}
    return out


def iso(moment: datetime | None) -> str | None:
    """``shared.clock.iso_utc`` to the second (what tables and the report show), None for None."""
    return None if moment is None else iso_utc(moment, timespec="seconds")


def parse_duration(text: str) -> timedelta:
    """``90s``, ``10m``, ``24h``, ``7d``, ``2w``."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration; write e.g. 90s, 10m, 24h or 7d")
    return timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _latency(doc: dict[str, Any]) -> float | None:
    """The function's time on the record: the stages of ``timings_ms`` summed.

    A clip's ``timings_ms`` also breaks its ``process`` stage down into process_video's
    phases; those are not added again.
    """
    from functions.results import VIDEO_PHASES

    timings = doc.get("timings_ms")
    if not isinstance(timings, dict):
        return None
    inner = VIDEO_PHASES if doc.get("kind") == "video" else ()
    values = [v for k, v in timings.items() if isinstance(v, (int, float)) and k not in inner]
    return round(sum(values), 2) if values else None


def from_document(doc: dict[str, Any], result_key: str, rule: CameraRule) -> Record:
    """A result document as the function writes it (frame, clip or error)."""
    source = doc.get("source") or {}
    key = str(source.get("key") or result_key)
    error = doc.get("error") or {}
    model = doc.get("model") or {}
    kind = str(doc.get("kind") or "frame")
    positive = doc.get("positive_class") or model.get("positive_class")
    threshold = _float(doc.get("threshold")) if "threshold" in doc else _float(model.get("threshold"))
    label, probability, positive_p = doc.get("label"), _float(doc.get("probability")), None
    if kind == "video":
        summary = doc.get("summary") or {}
        label = summary.get("dominant_label")
        probability = _float((summary.get("label_share") or {}).get(label)) if label else None
    elif positive and isinstance(doc.get("probabilities"), dict):
        positive_p = _float(doc["probabilities"].get(positive))
    return Record(
        key=key, result_key=result_key, camera=rule.camera(key), status=str(doc.get("status") or "unknown"),
        kind=kind, label=label, probability=probability, positive_probability=positive_p, threshold=threshold,
        positive_class=positive, error_type=error.get("type"), error_message=error.get("message"),
        processed_at=parse_time(doc.get("processed_at")), model_version=model.get("version"),
        latency_ms=_latency(doc), source_etag=source.get("etag"), annotated_key=doc.get("annotated_key"), doc=doc)
