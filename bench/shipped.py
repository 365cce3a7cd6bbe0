"""What Lambda runs, for the cold-start benchmark: the built zip, unpacked, on CPython 3.12.

``package()`` builds ``build/cctv-classifier.zip`` with ``scripts/build_package.sh`` in a
scratch copy of the tree (the working copy's ``build/`` is left alone) and unpacks it under
``bench/.cache/package-<digest>/``, the digest covering everything that goes into it.
``python()`` is a venv of CPython 3.12 (the runtime in serverless.yml) holding boto3 alone,
which the Lambda runtime provides.  Run with ``PYTHONPATH`` = the unpacked folder, this is
``/var/task`` on Lambda: the shipped modules and the shipped bytecode, nothing else.

Both need CPython 3.12 on an x86_64 host (the wheels are cp312 manylinux); without it the
benchmark falls back to ``bench.runtime_venv`` and says so.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
import zipfile
from pathlib import Path

from bench.common import CACHE, REPO, log, main_python, run
from bench.runtime_venv import boto3_pin

VENV = CACHE / "venv-lambda"
INPUTS = ("functions", "shared", "scripts/build_package.sh", "scripts/lib.sh")


def find_python312() -> str | None:
    """scripts/lib.sh's search, as the build uses it: $PYTHON312, python3.12, pyenv's 3.12."""
    out = subprocess.run(["bash", "-c", "source scripts/lib.sh && find_python312"], cwd=REPO, text=True,
                         capture_output=True)
    return out.stdout.strip() or None


def _digest() -> str:
    h = hashlib.sha256()
    for name in INPUTS:
        root = REPO / name
        for path in sorted([root] if root.is_file() else root.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                h.update(path.relative_to(REPO).as_posix().encode() + b"\0" + path.read_bytes())
    return h.hexdigest()[:16]


def build_zip(root: Path) -> Path:
    """Run scripts/build_package.sh in a scratch copy of the tree under ``root``; return the zip."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache")
    for name in ("scripts", "functions", "shared"):
        shutil.copytree(REPO / name, root / name, ignore=ignore)
    for name in ("serverless.yml", "package.json", "package-lock.json"):
        shutil.copy2(REPO / name, root / name)
    run(["bash", "scripts/build_package.sh"], cwd=root, env={**os.environ, "PYTHON": main_python()}, timeout=900)
    return root / "build" / "cctv-classifier.zip"


def package() -> Path:
    """The unpacked artifact for the current tree, built (about 30 s) when the tree changed."""
    target = CACHE / f"package-{_digest()}"
    if (target / "functions" / "classify.py").is_file():
        return target
    for old in CACHE.glob("package-*"):
        shutil.rmtree(old, ignore_errors=True)
    log(f"building the deployment zip (scripts/build_package.sh) and unpacking it into {target}")
    with tempfile.TemporaryDirectory(prefix="bench-shipped-") as tmp:
        zipfile.ZipFile(build_zip(Path(tmp))).extractall(target)
    return target


def python() -> Path | None:
    """CPython 3.12 with boto3 only, or None without a CPython 3.12."""
    base = find_python312()
    if base is None:
        return None
    py, stamp = VENV / "bin" / "python", VENV / ".bench-installed"
    if py.exists() and stamp.is_file() and stamp.read_text() == boto3_pin():
        return py
    log(f"building {VENV} ({base} + {boto3_pin()}: what the Lambda runtime provides)")
    subprocess.run([base, "-m", "venv", "--clear", str(VENV)], check=True)
    run([str(py), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", boto3_pin()], timeout=900)
    stamp.write_text(boto3_pin())
    return py
