"""``python -m bench``: the performance benchmarks.  Not part of the test suite.

    .venv/bin/python -m bench            # everything, about 10 minutes (first run also trains two bundles)
    .venv/bin/python -m bench --quick    # fewer repetitions and no alternatives, about 3-4 minutes
    .venv/bin/python -m bench --only 2,5 --backbones mobilenet_v2

Each benchmark runs in its own process (so TensorFlow from one never sits in another),
prints its rows, and all of them land in ``bench/results/latest.json`` (figures, the
full details, the machine).  Every comparison is a ratio measured within one run; every
figure is repeated and reported as median [min-max].  See docs/performance.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import BACKBONES, REPO, RESULTS, log, machine, main_python, table, versions
from bench.ctx import Ctx

MODULES = {1: "bench.cold_start", 2: "bench.warm_latency", 3: "bench.throughput", 4: "bench.featurisation",
           5: "bench.large_frame_decode", 6: "bench.package_size",
           8: "bench.training_rerun", 9: "bench.spark_vs_processes", 10: "bench.ops_summary"}
# Benchmark 7 (memory) is measured inside benchmark 3.
TITLES = {1: "cold start", 2: "warm per-frame latency", 3: "throughput through the local stack + 7 memory",
          4: "training featurisation", 5: "large-frame decode", 6: "package size",
          8: "training re-run that only refits the head",
          9: "batch scoring: Spark local[2] against 2 plain processes",
          10: "ops summary over 10,000 results"}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer repetitions, no alternatives (a smoke run)")
    p.add_argument("--only", default="", help="comma-separated benchmark numbers, e.g. 1,2 (7 comes with 3)")
    p.add_argument("--backbones", default=",".join(BACKBONES), help="default mobilenet_v2,resnet50")
    p.add_argument("--reps", type=int, default=3, help="repetitions of the expensive figures (default 3)")
    p.add_argument("--burst", action="store_true",
                   help="benchmark 3: also upload 1,000 frames in one burst (about 3 more minutes; see the notes)")
    p.add_argument("--out", type=Path, default=RESULTS / "latest.json", help="where the JSON goes")
    p.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    p.add_argument("--child", type=int, help=argparse.SUPPRESS)
    p.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _ctx(args: argparse.Namespace) -> Ctx:
    return Ctx(quick=args.quick, backbones=tuple(b for b in args.backbones.split(",") if b), reps=max(1, args.reps),
               burst=args.burst)


def _child(args: argparse.Namespace) -> int:
    module = importlib.import_module(MODULES[args.child])
    out = module.run(_ctx(args))
    payload = {"figures": [f.to_dict() for f in out["figures"]], "details": out["details"]}
    args.child_out.write_text(json.dumps(payload, default=str))
    return 0


def _row(f: dict[str, Any]) -> list[str]:
    verdict = "-" if f["passed"] is None else ("pass" if f["passed"] else "MISS")
    return [str(f["bench"]), f["name"], f["backbone"] or "-", f["target"], f["measured"], verdict]


HEADER = ["#", "figure", "backbone", "target", "measured median [min-max]", "verdict"]


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.child:
        return _child(args)
    wanted = [int(x) for x in args.only.split(",") if x.strip()] or list(MODULES)
    wanted = sorted({3 if n == 7 else n for n in wanted})
    ctx = _ctx(args)
    started = time.time()
    report: dict[str, Any] = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python -m bench " + " ".join(argv if argv is not None else sys.argv[1:]),
        "quick": ctx.quick, "backbones": list(ctx.backbones), "reps": ctx.reps,
        "machine": machine(), "versions": versions(), "benchmarks": {}, "figures": [],
    }
    # One-time set-up, outside every timing: the bundles and the runtime-only venv.
    from bench import runtime_venv
    from bench.bundles import ensure_bundle

    if any(n in wanted for n in (1, 2, 3, 4)):
        for backbone in ctx.backbones:
            ensure_bundle(backbone)
    if any(n in wanted for n in (1, 3)):
        runtime_venv.ensure()
    failures = []
    for n in wanted:
        log(f"benchmark {n}: {TITLES[n]}")
        t0 = time.time()
        load0 = os.getloadavg()
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
            out_path = Path(fh.name)
        cmd = [main_python(), "-m", "bench", "--child", str(n), "--child-out", str(out_path),
               "--backbones", ",".join(ctx.backbones), "--reps", str(ctx.reps)]
        cmd += (["--quick"] if ctx.quick else []) + (["--burst"] if ctx.burst else [])
        env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "2"}
        proc = subprocess.run(cmd, cwd=REPO, env=env)
        entry: dict[str, Any] = {"title": TITLES[n], "seconds": round(time.time() - t0, 1),
                                 "loadavg_before": [round(x, 2) for x in load0],
                                 "loadavg_after": [round(x, 2) for x in os.getloadavg()]}
        if proc.returncode != 0 or not out_path.exists() or not out_path.stat().st_size:
            entry["error"] = f"benchmark {n} failed with exit code {proc.returncode}"
            failures.append(n)
            log(entry["error"])
        else:
            payload = json.loads(out_path.read_text())
            entry["details"] = payload["details"]
            report["figures"].extend(payload["figures"])
            print(f"\n## {n}. {TITLES[n]} ({entry['seconds']:.0f} s)\n")
            print(table([_row(f) for f in payload["figures"]], HEADER), flush=True)
        out_path.unlink(missing_ok=True)
        report["benchmarks"][str(n)] = entry
    report["duration_s"] = round(time.time() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    from bench.report import markdown

    args.out.with_suffix(".md").write_text(markdown(report))
    print(f"\n## All figures ({report['duration_s']:.0f} s; {report['machine']['cores']} cores, "
          f"{report['machine']['cpu']}, {report['machine']['ram_gib']} GiB)\n")
    print(table([_row(f) for f in report["figures"]], HEADER))
    print(f"\nJSON: {args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out}")
    missed = [f for f in report["figures"] if f["passed"] is False]
    if failures:
        print(f"benchmarks that failed to run: {failures}", file=sys.stderr)
        return 2
    return 1 if (args.strict and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
