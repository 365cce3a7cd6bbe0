"""``ops summary``: counts, label shares, error types, latency, models and low-confidence frames."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from ops.records import STATUSES, Record, iso

GROUPINGS = ("camera", "label", "hour", "status")
LOW_CONFIDENCE_SHOWN = 10


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default)."""
    xs = sorted(values)
    if not xs:
        return None
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return round(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo), 2)


def group_key(by: str) -> Callable[[Record], str]:
    if by == "camera":
        return lambda r: r.camera
    if by == "label":
        return lambda r: r.label or f"({r.status})"
    if by == "status":
        return lambda r: r.status
    if by == "hour":
        return lambda r: r.processed_at.strftime("%Y-%m-%dT%H:00Z") if r.processed_at else "-"
    raise ValueError(f"cannot group by {by!r}; choose from {', '.join(GROUPINGS)}")


def status_counts(records: Iterable[Record]) -> dict[str, int]:
    counts = Counter(r.status for r in records)
    return {**{s: counts.get(s, 0) for s in STATUSES}, **{s: n for s, n in counts.items() if s not in STATUSES}}


def label_share(records: Iterable[Record]) -> dict[str, dict[str, float]]:
    labelled = [r.label for r in records if r.status == "ok" and r.label]
    counts = Counter(labelled)
    return {label: {"count": n, "share": round(n / len(labelled), 4)} for label, n in counts.most_common()}


def error_types(records: Iterable[Record]) -> list[dict[str, Any]]:
    seen: dict[str, dict[str, Any]] = {}
    for r in records:
        if r.status != "error":
            continue
        kind = r.error_type or "unknown"
        entry = seen.setdefault(kind, {"type": kind, "count": 0, "example_key": r.key,
                                       "example_message": r.error_message})
        entry["count"] += 1
    return sorted(seen.values(), key=lambda e: (-e["count"], e["type"]))


def latency(records: Iterable[Record]) -> dict[str, dict[str, Any]]:
    by_kind: dict[str, list[float]] = defaultdict(list)
    for r in records:
        if r.latency_ms is not None and r.status == "ok":
            by_kind[r.kind].append(r.latency_ms)
    return {kind: {"n": len(xs), "p50_ms": percentile(xs, 50), "p90_ms": percentile(xs, 90),
                   "p99_ms": percentile(xs, 99), "max_ms": max(xs)} for kind, xs in sorted(by_kind.items())}


def low_confidence(records: Iterable[Record], margin: float) -> list[Record]:
    """Frames whose decision was within ``margin`` of flipping, least confident first."""
    low = [r for r in records if r.status == "ok" and r.kind == "frame" and r.margin is not None
           and r.margin <= margin]
    return sorted(low, key=lambda r: (r.margin or 0.0, r.key))


def summarise(records: list[Record], *, margin: float = 0.1, by: str | None = None) -> dict[str, Any]:
    times = [r.processed_at for r in records if r.processed_at]
    low = low_confidence(records, margin)
    out: dict[str, Any] = {
        "results": len(records),
        "window": {"first": iso(min(times)) if times else None, "last": iso(max(times)) if times else None},
        "kinds": dict(Counter(r.kind for r in records)),
        "status": status_counts(records),
        "labels": label_share(records),
        "errors": error_types(records),
        "latency": latency(records),
        "models": dict(Counter(r.model_version or "-" for r in records).most_common()),
        "low_confidence": {"margin": margin, "count": len(low),
                           "frames": [_low_entry(r) for r in low[:LOW_CONFIDENCE_SHOWN]]},
    }
    if by:
        out["by"] = by
        out["groups"] = groups(records, by)
    return out


def groups(records: list[Record], by: str) -> list[dict[str, Any]]:
    key = group_key(by)
    buckets: dict[str, list[Record]] = defaultdict(list)
    for r in records:
        buckets[key(r)].append(r)
    return [{"group": name, "results": len(rs), "status": status_counts(rs),
             "labels": {k: v["share"] for k, v in label_share(rs).items()}}
            for name, rs in sorted(buckets.items())]


def _low_entry(r: Record) -> dict[str, Any]:
    return {"key": r.key, "label": r.label, "probability": r.probability,
            "positive_probability": r.positive_probability, "threshold": r.threshold,
            "margin": None if r.margin is None else round(r.margin, 4)}
