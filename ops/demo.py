"""The end of ``make demo``: the ``ops summary`` of what the demo just did, and the report it wrote.

Called by the local stack with its endpoint and bucket; everything goes through
:func:`ops.cli.main`, exactly as an operator would run it.
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

from ops.cli import main


def epilogue(endpoint_url: str, bucket: str, report_dir: Path, *, queue: str | None = None,
             env: Mapping[str, str] | None = None, shell_prefix: str = "", serving: bool = True,
             out: TextIO | None = None) -> int:
    """Print ``ops summary`` and write the report; while the stack keeps serving, print more commands.

    ``shell_prefix`` goes before each printed command (the local stack's dummy credentials).
    """
    out = out or sys.stdout
    common = ["--bucket", bucket, "--endpoint-url", endpoint_url, "--region", "us-east-1", "--no-cache"]
    out.write("\nops: python -m ops summary (what the demo's frames and clip came to)\n\n")
    code = main(["summary", "--since", "all", "--by", "camera", *common], env=env, out=out)
    where = io.StringIO()
    code |= main(["report", "--out", str(report_dir), "--since", "all", "--older-than", "0s", "--json", *common],
                 env=env, out=where)
    if where.getvalue():
        report = json.loads(where.getvalue())
        out.write(f"\nops: report with {report['cards']} frame cards, {report['clips']} clip(s), {report['errors']} "
                  f"error(s), {report['missing']} missing: open {report['open']}\n")
    if not serving:
        out.write("ops: (the local stack stops now, so the report's clip links stop working; ARGS=--serve keeps "
                  "them, and prints the ops commands to run against it)\n")
        return code
    args = f"--bucket {bucket} --endpoint-url {endpoint_url}"
    out.write(f"ops: more: {shell_prefix}.venv/bin/python -m ops missing --older-than 0s {args}\n")
    if queue:
        out.write(f"ops:       {shell_prefix}.venv/bin/python -m ops failures --queue {queue} {args}\n")
    return code
