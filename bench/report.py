"""``python -m bench.report [results.json]``: the figures table of a run as Markdown.

What ``docs/performance.md`` quotes; ``python -m bench`` also writes it next to the JSON
(``bench/results/latest.md``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from bench.common import RESULTS


def _verdict(passed: bool | None) -> str:
    return "-" if passed is None else ("pass" if passed else "**miss**")


def markdown(report: dict[str, Any]) -> str:
    m = report["machine"]
    lines = [
        f"Run {report['date']}, `{report['command']}`, {report['duration_s']:.0f} s; "
        f"{m['cores']} cores ({m['cpu']}), {m['ram_gib']} GiB RAM, Python {m['python']}; "
        f"load average at start {', '.join(f'{x:.2f}' for x in m['loadavg_at_start'])}.",
        "",
        "| # | figure | backbone | target | measured: median [min-max] | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for f in report["figures"]:
        lines.append(f"| {f['bench']} | {f['name'].strip()} | {f['backbone'] or '-'} | {f['target']} | "
                     f"{f['measured']} | {_verdict(f['passed'])} |")
    lines.append("")
    lines.append("| benchmark | seconds | load average before -> after (1 min) |")
    lines.append("|---|---|---|")
    for n, b in report["benchmarks"].items():
        lines.append(f"| {n}. {b['title']} | {b['seconds']:.0f} | {b['loadavg_before'][0]:.2f} -> "
                     f"{b['loadavg_after'][0]:.2f}{' (FAILED)' if 'error' in b else ''} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else RESULTS / "latest.json"
    print(markdown(json.loads(path.read_text())), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
