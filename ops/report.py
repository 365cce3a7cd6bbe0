"""``ops report``: one static, self-contained HTML page (Jinja2, autoescaped).

Thumbnails are small JPEGs embedded as data URIs, made from the input bytes with the
function's own decoder (``shared.imaging.decode_image``: its size and bomb limits, and the
squash to a fixed size the model sees).  The page loads nothing from anywhere: its CSS and
script are inline, and its Content-Security-Policy allows only that one script (by hash)
and data: images, so even a key that slipped past escaping could not run a script.
"""

from __future__ import annotations

import base64
import hashlib
import io
import posixpath
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

from ops.config import OpsConfig
from ops.load import load
from ops.records import Record, iso
from ops.source import DocumentCache
from ops.window import duration, since

THUMB_SIZE = (160, 120)
THUMB_QUALITY = 70
TEMPLATES = Path(__file__).with_name("templates")
# Colour per label (in sorted order), shared by the gallery, the charts and the clip strips.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")
ERROR_COLOUR = "#d62728"
# Chart bins: the smallest of these that gives at most MAX_BINS bins over the window.
BIN_WIDTHS = (timedelta(minutes=1), timedelta(minutes=5), timedelta(minutes=15), timedelta(hours=1),
              timedelta(hours=3), timedelta(hours=6), timedelta(days=1), timedelta(days=7))
MAX_BINS = 24


def thumbnail(data: bytes, key: str) -> str | None:
    """A data: URI of a small JPEG, or None when the bytes do not decode."""
    from PIL import Image

    from shared.errors import CCTVError
    from shared.imaging import decode_image

    try:
        pixels = decode_image(data, THUMB_SIZE, key=key)
    except CCTVError:
        return None
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=THUMB_QUALITY, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


CHANGED = "changed"  # the input's bytes are no longer those the result was made from


def thumbnails(config: OpsConfig, client: Any, records: list[Record]) -> dict[str, str | None]:
    """Input key -> thumbnail (or :data:`CHANGED`), through a cache keyed by the input's ETag."""
    from shared.config import DecodeLimits
    from shared.errors import CCTVError
    from shared.storage import ObjectStore

    cache = DocumentCache(config.cache_dir, f"thumbs|{config.s3.endpoint_url}|{config.bucket}|{THUMB_SIZE}")
    store = ObjectStore(client, config.bucket)
    out: dict[str, str | None] = {}
    todo = []
    for r in records:
        hit = cache.get(r.source_etag) if r.source_etag else None
        if hit is not None:
            out[r.key] = hit or None  # "" marks bytes known not to decode
        else:
            todo.append(r)

    def make(r: Record) -> str | None:
        try:
            data = store.get(r.key, max_bytes=DecodeLimits().max_bytes)
        except CCTVError:
            return None  # deleted, too large or unreadable: the card shows no picture
        if r.source_etag and data.etag != r.source_etag:
            return CHANGED  # re-uploaded since: its picture would not be what was classified
        uri = thumbnail(data.body, r.key)
        if r.source_etag:
            cache.put(r.source_etag, uri or "")
        return uri

    with ThreadPoolExecutor(max_workers=max(1, min(config.workers, len(todo) or 1))) as pool:
        for r, uri in zip(todo, pool.map(make, todo), strict=True):
            out[r.key] = uri
    cache.save(r.source_etag for r in records if r.source_etag)
    return out


def colours(labels: list[str]) -> dict[str, str]:
    return {label: PALETTE[i % len(PALETTE)] for i, label in enumerate(sorted(labels))}


def bin_width(first: datetime, last: datetime) -> timedelta:
    span = last - first
    return next((w for w in BIN_WIDTHS if span / w < MAX_BINS), BIN_WIDTHS[-1])


def label_share_over_time(records: list[Record], labels: list[str]) -> dict[str, Any]:
    """Per camera, per time bin: the share of each label among ok frames, stacked."""
    frames = [(r.processed_at, r.camera, r.label) for r in records
              if r.status == "ok" and r.kind == "frame" and r.processed_at and r.label]
    if not frames:
        return {"cameras": [], "bins": 0}
    first = min(t for t, _, _ in frames if t)
    last = max(t for t, _, _ in frames if t)
    width = bin_width(first, last)
    # Bins start on whole multiples of their width (05:24:00, not 05:24:37), so the ticks are exact.
    step = width.total_seconds()
    first = datetime.fromtimestamp(first.timestamp() // step * step, tz=timezone.utc)
    n_bins = int((last - first) / width) + 1
    per_camera: dict[str, list[Counter[str]]] = defaultdict(lambda: [Counter() for _ in range(n_bins)])
    for when, camera, label in frames:
        if when and label:
            per_camera[camera][int((when - first) / width)][label] += 1
    cameras = [{"camera": camera, "frames": sum(sum(c.values()) for c in bins),
                "columns": [_column(i, first + i * width, width, counts, labels) for i, counts in enumerate(bins)]}
               for camera, bins in sorted(per_camera.items())]
    return {"cameras": cameras, "bins": n_bins, "bin": _span(width), "first": iso(first),
            "last": iso(first + n_bins * width)}


def _span(width: timedelta) -> str:
    seconds = int(width.total_seconds())
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            return f"{seconds // size}-{unit}"
    return f"{seconds}-second"


def _column(index: int, start: datetime, width: timedelta, counts: Counter[str], labels: list[str]) -> dict[str, Any]:
    """One bar: each label's share, stacked bottom-up in label order (``offset`` is where it starts)."""
    total = sum(counts.values())
    stack, offset = [], 0.0
    for label in labels:
        share = counts[label] / total if total else 0.0
        if share:
            stack.append({"label": label, "share": share, "offset": offset, "count": counts[label]})
        offset += share
    tick = start.strftime("%m-%d" if width >= timedelta(days=1) else "%H:%M")  # the caption has the dates
    return {"index": index, "start": iso(start), "tick": tick, "total": total, "stack": stack}


def clip_link(config: OpsConfig, client: Any, key: str, mode: str, report_prefix: str, expires: int) -> str:
    if mode == "relative":
        rel = posixpath.relpath(key, start=report_prefix.rstrip("/") or ".")
        return "/".join(quote(part) for part in rel.split("/"))
    from ops.cli import presign

    return presign(client, config.bucket, key, expires)


def clip_entry(r: Record, link: str | None) -> dict[str, Any]:
    doc = r.doc or {}
    summary, video = doc.get("summary") or {}, doc.get("video") or {}
    segments = summary.get("segments") or []
    end = max([s.get("end_s") or 0 for s in segments] + [video.get("duration_s") or 0]) or 1.0
    return {"record": r, "link": link, "duration_s": end, "segments": segments,
            "label_share": summary.get("label_share") or {}, "frames_sampled": video.get("frames_sampled"),
            "partial": doc.get("partial")}


def card(r: Record, thumb: str | None) -> dict[str, Any]:
    if r.status != "ok":
        no_thumb = r.error_type or r.status
    else:
        no_thumb = "input re-uploaded since" if thumb == CHANGED else "no picture"
    return {"record": r, "thumb": None if thumb == CHANGED else thumb, "no_thumb": no_thumb,
            "time": iso(r.processed_at) or "-",
            "p": -1 if r.probability is None else round(r.probability, 4),
            "percent": 0 if r.probability is None else round(100 * r.probability, 1)}


def context(config: OpsConfig, client: Any, records: list[Record], missing: dict[str, Any],
            *, max_cards: int, links: str, report_prefix: str, expires: int) -> dict[str, Any]:
    frames = [r for r in records if r.kind != "video"]
    shown = frames[:max_cards]
    thumbs = thumbnails(config, client, [r for r in shown if r.status == "ok"])
    labels = sorted({r.label for r in records if r.label} | {label for r in records if r.kind == "video"
                                                             for label in ((r.doc or {}).get("summary") or {})
                                                             .get("label_share", {})})
    clips = [clip_entry(r, clip_link(config, client, r.annotated_key, links, report_prefix, expires)
                        if r.annotated_key else None) for r in records if r.kind == "video"]
    status = Counter(r.status for r in records)
    return {
        "bucket": config.bucket, "generated_at": iso(config.clock()), "results": len(records),
        "status": dict(status), "models": dict(Counter(r.model_version or "-" for r in records)),
        "cards": [card(r, thumbs.get(r.key)) for r in shown], "frames_total": len(frames),
        "cameras": sorted({r.camera for r in records}), "labels": labels, "colours": colours(labels),
        "error_colour": ERROR_COLOUR, "statuses": sorted(status),
        "errors": [r for r in records if r.status == "error"], "missing": missing["missing"],
        "missing_pending": missing["pending"], "inputs": missing["inputs"],
        "chart": label_share_over_time(records, labels), "clips": clips,
    }


def render(ctx: dict[str, Any]) -> str:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined
    from markupsafe import Markup

    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, undefined=StrictUndefined,
                      trim_blocks=True, lstrip_blocks=True)
    script = env.get_template("report.js").render()
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode("ascii")
    return env.get_template("report.html.j2").render(**ctx, script=Markup(script), script_hash=digest)


def _target(to: str) -> tuple[str, str]:
    url = urlparse(to)
    if url.scheme != "s3" or not url.netloc:
        from shared.errors import ConfigError

        raise ConfigError(f"--to {to!r} is not an s3://BUCKET/PREFIX/ address.")
    prefix = url.path.lstrip("/")
    return url.netloc, (prefix.rstrip("/") + "/" if prefix else "")


def write_report(config: OpsConfig, client: Any, args: Any) -> dict[str, Any]:
    from ops.cli import presign
    from ops.missing import find_missing

    now = config.clock()
    loaded = load(config, client, since=since(args, now))
    missing = find_missing(config, client, older_than=duration(args.older_than, "--older-than"))
    bucket, prefix = _target(args.to) if args.to else (config.bucket, "")
    links = args.links or "presigned"
    ctx = context(config, client, loaded.records, missing, max_cards=args.max_cards, links=links,
                  report_prefix=prefix, expires=args.expires)
    html = render(ctx)
    if args.to:
        key = f"{prefix}index.html"
        client.put_object(Bucket=bucket, Key=key, Body=html.encode(), ContentType="text/html; charset=utf-8")
        where = presign(client, bucket, key, args.expires)
    else:
        path = Path(args.out) / "index.html"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(html, encoding="utf-8")
        where = path.resolve().as_uri()
    return {"open": where, "results": len(loaded.records), "cards": len(ctx["cards"]), "clips": len(ctx["clips"]),
            "errors": len(ctx["errors"]), "missing": len(ctx["missing"]), "bytes": len(html.encode())}
