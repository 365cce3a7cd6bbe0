"""A venv holding only what the cloud function has at run time.

``functions/requirements.txt`` (numpy, pillow, onnxruntime) plus boto3 (which Lambda
provides), pinned to the versions of the development ``requirements.txt``.  Built once
under ``bench/.cache/venv-runtime``; rebuilt when the requirements change.  The repo goes
on ``PYTHONPATH`` for ``functions/`` and ``shared/`` (as Lambda puts ``/var/task`` on
``sys.path``).
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

from bench.common import CACHE, REPO, log, run

VENV = CACHE / "venv-runtime"


def boto3_pin() -> str:
    for line in (REPO / "requirements.txt").read_text().splitlines():
        if re.match(r"^boto3\s*==", line.strip()):
            return line.split(";")[0].strip()
    return "boto3"


def _wanted() -> str:
    return (REPO / "functions" / "requirements.txt").read_text() + "\n" + boto3_pin() + "\n"


def python() -> Path:
    return VENV / "bin" / "python"


def ensure() -> Path:
    stamp = VENV / ".bench-installed"
    digest = hashlib.sha256(_wanted().encode()).hexdigest()
    if python().exists() and stamp.is_file() and stamp.read_text() == digest:
        return python()
    base = getattr(sys, "_base_executable", sys.executable)
    log(f"building the runtime-only venv {VENV} ({base}; functions/requirements.txt + {boto3_pin()})")
    subprocess.run([base, "-m", "venv", "--clear", str(VENV)], check=True)
    req = VENV / "requirements-bench.txt"
    req.write_text(_wanted())
    run([str(python()), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r", str(req)],
        timeout=900)
    stamp.write_text(digest)
    return python()


def packages() -> list[str]:
    out = run([str(python()), "-m", "pip", "list", "--format=freeze", "--disable-pip-version-check"]).stdout
    return sorted(line for line in out.splitlines() if line and not line.startswith(("pip==", "setuptools==")))


if __name__ == "__main__":
    print(ensure())
    print("\n".join(packages()))
