#!/usr/bin/env python3
"""Print the unzipped size of what `serverless package` ships, and fail over Lambda's limit.

Lambda allows 250 MB (262,144,000 bytes) for a function's code *plus all its layers*,
unzipped. This sums ``ZipInfo.file_size`` over every entry of the given zips (directories are
searched for ``*.zip``) and breaks the total down by distribution (numpy, onnxruntime, pillow,
...) and by our own packages (functions, shared).

With ``--template``, it also checks that every ``AWS::Lambda::Version.CodeSha256`` in the
generated CloudFormation template is the SHA-256 of one of the measured zips, i.e. that what
was measured is exactly what the stack deploys.

Usage: python scripts/package_size.py [--template T] [--limit-mb 250] ZIP_OR_DIR [...]
Exit status: 0 within the limit, 1 over it (or template mismatch), 2 nothing to measure.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import sys
import zipfile
from collections import defaultdict
from pathlib import Path

MB = 1024 * 1024
LAMBDA_UNZIPPED_LIMIT_MB = 250

# Import names and sidecar directories that belong to a differently named distribution.
_ALIASES = {"pil": "pillow", "google": "protobuf"}


def group_of(name: str) -> str:
    """Map a zip entry to the distribution or package it belongs to."""
    parts = name.split("/")
    if parts[0] == "python" and len(parts) > 1:  # layer layout: python/<top-level>
        parts = parts[1:]
    if len(parts) == 1:
        return "(top-level files)"
    top = parts[0]
    top = re.sub(r"-[^-]+\.(dist|egg)-info$", "", top)  # numpy-2.4.6.dist-info -> numpy
    top = re.sub(r"\.libs$", "", top)  # numpy.libs -> numpy (bundled shared libraries)
    top = top.lower().replace("_", "-")
    return _ALIASES.get(top, top)


def collect(paths: list[Path]) -> list[Path]:
    zips: list[Path] = []
    for path in paths:
        if path.is_dir():
            zips.extend(sorted(path.glob("*.zip")))
        elif path.suffix == ".zip" and path.is_file():
            zips.append(path)
        else:
            raise SystemExit(f"package_size: {path} is neither a .zip file nor a directory")
    return zips


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="*", type=Path, default=[Path(".serverless")])
    parser.add_argument("--template", type=Path,
                        help="CloudFormation template whose Lambda CodeSha256 must match a measured zip")
    parser.add_argument("--limit-mb", type=float, default=LAMBDA_UNZIPPED_LIMIT_MB,
                        help="fail when the unzipped total exceeds this many MiB (default 250)")
    args = parser.parse_args(argv)

    zips = collect(args.paths)
    if not zips:
        print("package_size: no .zip files found; run `npx serverless package` first", file=sys.stderr)
        return 2

    zips = list(dict.fromkeys(p.resolve() for p in zips))
    total = 0
    shas: set[str] = set()
    by_group: dict[str, int] = defaultdict(int)
    print("Unzipped size of the deployment artifacts (sum of ZipInfo.file_size):")
    for zpath in zips:
        shas.add(base64.b64encode(hashlib.sha256(zpath.read_bytes()).digest()).decode())
        with zipfile.ZipFile(zpath) as zf:
            infos = [i for i in zf.infolist() if not i.is_dir()]
        unzipped = sum(i.file_size for i in infos)
        total += unzipped
        for info in infos:
            by_group[group_of(info.filename)] += info.file_size
        print(f"  {display(zpath)}: {unzipped / MB:8.2f} MiB unzipped, {zpath.stat().st_size / MB:7.2f} MiB zipped, "
              f"{len(infos)} files")

    print("Breakdown:")
    for name, size in sorted(by_group.items(), key=lambda kv: (-kv[1], kv[0])):
        print(f"  {name:<20} {size / MB:8.2f} MiB")
    print(f"TOTAL unzipped: {total / MB:.2f} MiB ({total:,} bytes); Lambda limit {args.limit_mb:g} MiB")

    status = 0
    if args.template is not None:
        status = check_template(args.template, shas)

    if total > args.limit_mb * MB:
        print(f"FAIL: the package is {total / MB - args.limit_mb:.2f} MiB over the limit", file=sys.stderr)
        return 1
    print(f"{'OK' if status == 0 else 'Size OK'}: {args.limit_mb - total / MB:.2f} MiB of headroom")
    return status


def display(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def check_template(template: Path, shas: set[str]) -> int:
    resources = json.loads(template.read_text())["Resources"]
    versions = {name: r["Properties"].get("CodeSha256") for name, r in resources.items()
                if r.get("Type") == "AWS::Lambda::Version"}
    if not versions:
        print(f"Template check: {template} has no AWS::Lambda::Version, nothing to compare")
        return 0
    bad = {name: sha for name, sha in versions.items() if sha not in shas}
    for name, sha in sorted(versions.items()):
        print(f"Template check: {name} CodeSha256 {sha} "
              f"{'does NOT match any measured zip' if name in bad else 'matches a measured zip'}")
    if bad:
        print("FAIL: the template deploys a different artifact from the one measured; rebuild, then "
              "run `serverless package` again", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
