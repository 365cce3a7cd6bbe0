"""``python -m ops``: summary, missing, list, show, failures and report (see ``--help``)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TextIO

from ops import config as cfg
from ops.load import load
from ops.records import Record, iso
from ops.summary import GROUPINGS, summarise
from ops.text import cell, pct, table
from ops.window import duration, since, window
from shared.clock import Clock, utc_now
from shared.errors import CCTVError, ConfigError

if TYPE_CHECKING:
    # What add_subparsers returns; argparse names no public type for it.
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

DESCRIPTION = """\
See what the cameras saw: results summarised, listed and shown one by one, inputs that never
got a result, the failure queue, and a self-contained HTML report.  Reads the bucket only
(and the failure queue); needs no server.
"""
# SigV4 presigned URLs live at most 7 days.
MAX_PRESIGN_S = 7 * 24 * 3600
LIST_HEADER = ["processed_at", "camera", "status", "label", "p", "key"]


def _summary_parser(sub: Subparsers) -> argparse.ArgumentParser:
    s = sub.add_parser("summary", help="counts, label shares, errors, latency, models, low-confidence frames")
    s.add_argument("--since", default="24h", help="window: a duration back from now or an ISO time (default 24h; "
                   "'all' for everything)")
    s.add_argument("--until", help="end of the window (ISO time or duration back from now)")
    s.add_argument("--by", choices=GROUPINGS, help="also break the counts down by this")
    s.add_argument("--margin", type=float, default=0.1,
                   help="low confidence: the positive-class score within this of the threshold (default 0.1)")
    return s


def _missing_parser(sub: Subparsers) -> argparse.ArgumentParser:
    m = sub.add_parser("missing", help="inputs with no result, or whose result predates them")
    m.add_argument("--older-than", default="10m", help="grace for inputs still in flight (default 10m)")
    return m


def _show_parser(sub: Subparsers) -> argparse.ArgumentParser:
    sh = sub.add_parser("show", help="one result, readably, with presigned links to the frame and clip")
    sh.add_argument("key", help="the input key (incoming/...) or its result key (results/....json)")
    sh.add_argument("--expires", type=_seconds(1, MAX_PRESIGN_S), default=3600,
                    help="presigned link lifetime in seconds (default 3600)")
    return sh


def _list_parser(sub: Subparsers) -> argparse.ArgumentParser:
    ls = sub.add_parser("list", help="results, filtered")
    ls.add_argument("--camera", action="append", help="only these cameras (repeatable)")
    ls.add_argument("--label", action="append", help="only these labels (repeatable)")
    ls.add_argument("--status", action="append", help="only these statuses: ok, error, ... (repeatable)")
    ls.add_argument("--kind", choices=("frame", "video"), help="frames or clips only")
    ls.add_argument("--min-prob", type=float, help="probability of the chosen label at least this")
    ls.add_argument("--max-prob", type=float, help="probability of the chosen label at most this")
    ls.add_argument("--since", help="processed at or after (duration back from now, or ISO time)")
    ls.add_argument("--until", help="processed before")
    ls.add_argument("--limit", type=int, default=100, help="rows shown, newest first (default 100; 0 for all)")
    return ls


def _failures_parser(sub: Subparsers) -> argparse.ArgumentParser:
    f = sub.add_parser("failures", help="what sits in the failure (dead-letter) queue; --redrive sends it back")
    f.add_argument("--queue", help="the source queue, name or URL; its RedrivePolicy names the DLQ (env QUEUE_URL)")
    f.add_argument("--dlq", help="the dead-letter queue, name or URL (env DLQ_URL)")
    f.add_argument("--visibility", type=_seconds(0, 43_200), default=30,
                   help="seconds the messages stay hidden while read; they are released at the end (default 30)")
    f.add_argument("--max", type=_seconds(1, 100_000), default=100, help="messages read at most (default 100)")
    f.add_argument("--redrive", action="store_true", help="send them back to the source queue")
    return f


def _report_parser(sub: Subparsers) -> argparse.ArgumentParser:
    r = sub.add_parser("report", help="a static, self-contained HTML page")
    where = r.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", help="write DIR/index.html")
    where.add_argument("--to", metavar="s3://BUCKET/PREFIX/", help="upload index.html there; prints a presigned link")
    r.add_argument("--since", default="7d", help="window (default 7d; 'all' for everything)")
    r.add_argument("--older-than", default="10m", help="grace for the missing-results list (default 10m)")
    r.add_argument("--max-cards", type=_seconds(0, 100_000), default=400,
                   help="frames shown with thumbnails, newest first (default 400)")
    r.add_argument("--links", choices=("presigned", "relative"),
                   help="links to annotated clips: presigned (default; open without credentials until they "
                   "expire) or relative to the report (a report in the same, publicly readable bucket)")
    r.add_argument("--expires", type=_seconds(1, MAX_PRESIGN_S), default=MAX_PRESIGN_S,
                   help="presigned link lifetime in seconds (default and most: 7 days)")
    return r


def _seconds(low: int, high: int) -> Any:
    """An argparse type: a whole number within [low, high]."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not between {low} and {high}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ops", description=DESCRIPTION,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for make in (_summary_parser, _missing_parser, _list_parser, _show_parser, _failures_parser, _report_parser):
        cfg.add_common(make(sub))  # in this order in --help
    return p


# -- commands -----------------------------------------------------------------------------


def cmd_summary(config: cfg.OpsConfig, client: Any, args: argparse.Namespace, out: TextIO) -> int:
    now = config.clock()
    loaded = load(config, client, since=since(args, now), until=window(args.until, now, "--until"))
    summary = summarise(loaded.records, margin=args.margin, by=args.by)
    summary["source"] = loaded.stats()
    if config.as_json:
        _json(summary, out)
    else:
        out.write(format_summary(summary) + "\n")
    return 0


def format_summary(s: dict[str, Any]) -> str:
    st = s["status"]
    lines = [f"{s['results']} results ({', '.join(f'{n} {k}' for k, n in sorted(s['kinds'].items())) or 'none'}), "
             f"{s['window']['first'] or '-'} .. {s['window']['last'] or '-'}",
             "status: " + ", ".join(f"{k} {n}" for k, n in st.items()), ""]
    if s["labels"]:
        lines += [table([[k, v["count"], pct(v["share"])] for k, v in s["labels"].items()],
                        ["label", "count", "share"]), ""]
    if s["errors"]:
        lines += [table([[e["type"], e["count"], e["example_key"]] for e in s["errors"]],
                        ["error type", "count", "example key"]), ""]
    if s["latency"]:
        lines += [table([[k, v["n"], v["p50_ms"], v["p90_ms"], v["p99_ms"], v["max_ms"]]
                         for k, v in s["latency"].items()], ["kind", "n", "p50 ms", "p90 ms", "p99 ms", "max ms"]), ""]
    lines.append("models: " + (", ".join(f"{v} ({n})" for v, n in s["models"].items()) or "-"))
    low = s["low_confidence"]
    lines.append(f"low confidence (within {low['margin']:g} of the threshold): {low['count']}")
    if low["frames"]:
        lines += [table([[f["key"], f["label"], f["positive_probability"] if f["positive_probability"] is not None
                          else f["probability"], f["threshold"]] for f in low["frames"]],
                        ["key", "label", "score", "threshold"])]
    if s.get("groups"):
        labels = sorted({label for g in s["groups"] for label in g["labels"]})
        rows = [[g["group"], g["results"], g["status"].get("ok", 0), g["status"].get("error", 0),
                 *(pct(g["labels"].get(label)) for label in labels)] for g in s["groups"]]
        lines += ["", table(rows, [s["by"], "results", "ok", "error", *labels])]
    src = s.get("source", {})
    if src:
        lines.append(f"\n({src['results_listed']} result objects listed: {src['fetched']} fetched, "
                     f"{src['from_cache']} from the cache, {src['from_table']} from the Parquet table)")
    return "\n".join(lines)


def cmd_missing(config: cfg.OpsConfig, client: Any, args: argparse.Namespace, out: TextIO) -> int:
    from ops.missing import find_missing

    found = find_missing(config, client, older_than=duration(args.older_than, "--older-than"))
    if config.as_json:
        _json({**found, "missing": [m.to_json() for m in found["missing"]], "checked_at": iso(found["checked_at"])},
              out)
    else:
        rows = [[iso(m.uploaded_at), m.camera, m.reason, m.key] for m in found["missing"]]
        out.write(table(rows, ["uploaded_at", "camera", "reason", "key"]) + "\n")
        out.write(f"{len(found['missing'])} of {found['inputs']} inputs have no current result"
                  f" ({found['pending']} more are younger than {args.older_than} and may still be in flight)\n")
    return 1 if found["missing"] else 0


def select(records: list[Record], args: argparse.Namespace) -> list[Record]:
    def keep(r: Record) -> bool:
        return ((not args.camera or r.camera in args.camera) and (not args.label or r.label in args.label)
                and (not args.status or r.status in args.status) and (not args.kind or r.kind == args.kind)
                and (args.min_prob is None or (r.probability is not None and r.probability >= args.min_prob))
                and (args.max_prob is None or (r.probability is not None and r.probability <= args.max_prob)))
    return [r for r in records if keep(r)]


def cmd_list(config: cfg.OpsConfig, client: Any, args: argparse.Namespace, out: TextIO) -> int:
    now = config.clock()
    loaded = load(config, client, since=since(args, now), until=window(args.until, now, "--until"))
    chosen = select(loaded.records, args)
    shown = chosen if args.limit <= 0 else chosen[:args.limit]
    if config.as_json:
        _json({"total": len(chosen), "results": [r.to_json() for r in shown]}, out)
        return 0
    rows = [[iso(r.processed_at), r.camera, r.status, r.label or r.error_type, r.probability, r.key] for r in shown]
    out.write(table(rows, LIST_HEADER) + "\n")
    out.write(f"{len(shown)} of {len(chosen)} matching results shown (of {len(loaded.records)})\n")
    return 0


def presign(client: Any, bucket: str, key: str, expires: int) -> str:
    return str(client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key},
                                             ExpiresIn=expires))


def cmd_show(config: cfg.OpsConfig, client: Any, args: argparse.Namespace, out: TextIO) -> int:
    from ops.records import from_document
    from shared.storage import ObjectStore

    result_key = args.key if args.key.startswith(config.results_prefix) else config.result_key(args.key)
    if result_key is None:
        raise ConfigError(f"{args.key!r} is neither under the input prefix {config.input_prefix!r} "
                          f"nor under the results prefix {config.results_prefix!r}.")
    doc = ObjectStore(client, config.bucket).get_json(result_key)
    record = from_document(doc, result_key, config.camera)
    links = {"input": presign(client, config.bucket, record.key, args.expires)}
    if record.annotated_key:
        links["annotated_clip"] = presign(client, config.bucket, record.annotated_key, args.expires)
    if config.as_json:
        _json({"result_key": result_key, "camera": record.camera, "links": links, "result": doc}, out)
        return 0
    out.write(format_show(record, doc, links) + "\n")
    return 0


def format_show(r: Record, doc: dict[str, Any], links: dict[str, str]) -> str:
    rows: list[list[Any]] = [["key", r.key], ["result", r.result_key], ["camera", r.camera], ["status", r.status],
                             ["kind", r.kind], ["processed_at", iso(r.processed_at)], ["model", r.model_version]]
    if r.status == "ok":
        rows += [["label", r.label], ["probability", r.probability]]
        for label, p in sorted((doc.get("probabilities") or {}).items()):
            rows.append([f"  p({label})", p])
        if r.threshold is not None:
            rows.append(["threshold", f"{r.threshold:.3f} on {r.positive_class}"])
    else:
        rows += [["error", r.error_type], ["message", r.error_message]]
    summary = doc.get("summary") or {}
    if r.kind == "video" and summary:
        rows += [["label share", ", ".join(f"{k} {pct(v)}" for k, v in (summary.get("label_share") or {}).items())]]
        for seg in summary.get("segments") or []:
            rows.append(["  segment", f"{seg['start_s']:.2f}-{seg['end_s']:.2f} s {seg['label']}"])
    rows += [[f"timing {k}", f"{v} ms"] for k, v in (doc.get("timings_ms") or {}).items()]
    body = "\n".join(f"{cell(k, 20):<20} {cell(v, 200)}" for k, v in rows)
    # Links are printed whole (never truncated): they are meant to be copied.
    return body + "\n" + "\n".join(f"{name:<20} {url}" for name, url in links.items())


def cmd_failures(config: cfg.OpsConfig, client: Any, args: argparse.Namespace, out: TextIO,
                 env: Mapping[str, str]) -> int:
    from ops import failures as fl
    from shared.storage import ObjectStore

    sqs = fl.sqs_client(config.sqs_endpoint_url, config.s3.region, config.credentials)
    source, dlq = fl.resolve_queues(sqs, args.queue or env.get("QUEUE_URL"), args.dlq or env.get("DLQ_URL"))
    messages = fl.peek(sqs, dlq, visibility=args.visibility, limit=args.max)
    moved = 0
    try:
        fl.explain(messages, lambda b: ObjectStore(client, b), config.result_key)
        if args.redrive and messages:
            if source is None:
                raise ConfigError("Cannot redrive: no source queue is known for this dead-letter queue (this "
                                  "deployment may not be SQS-fed); pass --queue, or upload the frames again.")
            moved = fl.redrive(sqs, dlq, source, messages)
    finally:
        fl.release(sqs, dlq, messages)  # whatever happened, nothing read stays hidden
    if config.as_json:
        _json({"dlq": dlq, "source_queue": source, "messages": [m.to_json() for m in messages], "redriven": moved},
              out)
        return 0
    rows = [[m.message_id[:12], m.receive_count, ", ".join(k for _, k in m.objects) or "?",
             m.reason or m.parse_error or "-", m.result or "-"] for m in messages]
    out.write(table(rows, ["message", "receives", "objects", "why (message)", "result now"]) + "\n")
    note = f"; {moved} sent back to {source}" if args.redrive else ""
    out.write(f"{len(messages)} message(s) in {dlq}{note}\n")
    return 0


def cmd_report(config: cfg.OpsConfig, client: Any, args: argparse.Namespace, out: TextIO) -> int:
    from ops.report import write_report

    where = write_report(config, client, args)
    if config.as_json:
        _json(where, out)
    else:
        out.write(f"report: {where['results']} results, {where['cards']} frame cards, {where['clips']} clips, "
                  f"{where['errors']} errors, {where['missing']} missing\n")
        out.write(f"open: {where['open']}\n")
    return 0


def _json(obj: Any, out: TextIO) -> None:
    out.write(json.dumps(obj, indent=2, default=str, ensure_ascii=False) + "\n")


COMMANDS = {"summary": cmd_summary, "missing": cmd_missing, "list": cmd_list, "show": cmd_show,
            "report": cmd_report}


def main(argv: Sequence[str] | None = None, *, env: Mapping[str, str] | None = None, out: TextIO | None = None,
         clock: Clock = utc_now) -> int:
    env = os.environ if env is None else env
    out = out or sys.stdout
    args = build_parser().parse_args(argv)
    try:
        config = cfg.config_from_args(args, env, clock)
        client = cfg.client(config)
        if args.command == "failures":
            return cmd_failures(config, client, args, out, env)
        return COMMANDS[args.command](config, client, args, out)
    except CCTVError as exc:
        print(f"ops: error: {exc.message}", file=sys.stderr)
        return exc.exit_code
