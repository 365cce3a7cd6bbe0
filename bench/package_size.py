"""Benchmark 6: unzipped size of what ``serverless package`` ships (code + vendored runtime deps).

Reuses the project's own tools in a scratch copy of the tree (so ``build/`` and
``.serverless/`` of the working copy are left alone): ``scripts/build_package.sh`` vendors
``functions/requirements.txt`` as cp312 manylinux wheels next to ``functions/`` and
``shared/`` in ``build/cctv-classifier.zip``; ``npx serverless package`` (offline, dummy
credentials, the repo's ``node_modules``, no ``npm ci``) writes the CloudFormation
template; ``scripts/package_size.py --template`` sums the unzipped sizes and checks that
the template deploys the zip that was measured.  boto3 is not shipped (Lambda's runtime
has it); its installed size in the runtime venv is reported for platforms that lack it.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from bench import runtime_venv, shipped
from bench.common import REPO, log, main_python, run as run_cmd
from bench.ctx import Ctx, Figure

LIMIT_MB = 250.0
MiB = 1024 * 1024


def _sls_env() -> dict[str, str]:
    env = dict(os.environ)
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        env.pop(name, None)
    env.update({"AWS_ACCESS_KEY_ID": "dummy", "AWS_SECRET_ACCESS_KEY": "dummy", "AWS_SESSION_TOKEN": "dummy",
                "AWS_REGION": "eu-west-1", "AWS_DEFAULT_REGION": "eu-west-1", "AWS_SDK_LOAD_CONFIG": "0",
                "SLS_TELEMETRY_DISABLED": "1", "SLS_TRACKING_DISABLED": "1", "SLS_NOTIFICATIONS_MODE": "off",
                "SLS_DEPRECATION_DISABLE": "*", "SLS_DISABLE_AUTO_UPDATE": "1", "SLS_INTERACTIVE_SETUP_DISABLE": "1",
                "SLS_AWS_REQUEST_MAX_RETRIES": "0", "CI": "1", "FORCE_COLOR": "0"})
    return env


def _dir_size(paths: list[Path]) -> int:
    return sum(f.stat().st_size for p in paths if p.exists() for f in p.rglob("*") if f.is_file())


def run(ctx: Ctx) -> dict[str, Any]:
    details: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-package-") as tmp:
        root = Path(tmp)
        log("package size: scripts/build_package.sh (pip --platform manylinux cp312) in a scratch copy")
        zips = [str(shipped.build_zip(root))]
        template = None
        sls = REPO / "node_modules" / ".bin" / "serverless"
        if shutil.which("npx") and sls.exists():
            (root / "node_modules").symlink_to(REPO / "node_modules")
            log("package size: npx serverless package (offline, dummy credentials; node_modules reused, no npm ci)")
            out = run_cmd(["npx", "--no-install", "serverless", "package", "--stage", "dev"], cwd=root,
                          env=_sls_env(), timeout=300, check=False)
            template = root / ".serverless" / "cloudformation-template-update-stack.json"
            if out.returncode != 0 or not template.is_file():
                details["serverless_package"] = f"failed ({out.returncode}): {(out.stdout + out.stderr)[-800:]}"
                template = None
            else:
                details["serverless_package"] = "ok"
                zips += [str(p) for p in sorted((root / ".serverless").glob("*.zip"))]
        else:
            details["serverless_package"] = "skipped: npx or node_modules/.bin/serverless missing; zip measured alone"
        cmd = [main_python(), "scripts/package_size.py", *(["--template", str(template)] if template else []), *zips]
        size = run_cmd(cmd, cwd=root, check=False)
        details["package_size_output"] = size.stdout.strip().splitlines()
        details["package_size_exit"] = size.returncode
        m = re.search(r"TOTAL unzipped: ([\d.]+) MiB \(([\d,]+) bytes\)", size.stdout)
        if not m:
            raise RuntimeError(f"package_size.py printed no total: {size.stdout}\n{size.stderr}")
        total = int(m.group(2).replace(",", ""))
        details["unzipped_bytes"] = total
        details["unzipped_mib"] = round(total / MiB, 2)
        details["zipped_mib"] = round(Path(zips[0]).stat().st_size / MiB, 2)
        details["template_check"] = [ln for ln in size.stdout.splitlines() if ln.startswith("Template check")]
    site = next((runtime_venv.VENV / "lib").glob("python*/site-packages"), None)
    if site is not None:
        names = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six.py")
        details["boto3_stack_installed_mib_not_shipped"] = round(_dir_size([site / n for n in names]) / MiB, 1)
    mib = details["unzipped_mib"]
    ok = mib <= LIMIT_MB and details["package_size_exit"] == 0
    fig = Figure(6, "package, unzipped (MiB)", None, f"<= {LIMIT_MB:g} MB", f"{mib:.1f} MiB ({total / 1e6:.1f} MB)",
                 ok, {"median": mib, "min": mib, "max": mib, "n": 1})
    return {"figures": [fig], "details": details}
