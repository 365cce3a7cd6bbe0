"""``python -m batch.dist``: the two artefacts ``spark-submit`` needs on a cluster.

* ``build/batch/cctv_batch.zip`` for ``--py-files``: the packages ``batch``, ``functions``
  and ``shared`` (sources and the quiet log4j file), importable from the zip.
* ``build/batch/env.tar.gz`` for ``--archives env.tar.gz#env``: a virtual environment with
  what the executors import (numpy, onnxruntime, Pillow, PyAV, boto3, pandas, pyarrow and
  their dependencies), copied file by file from this venv's installed distributions, so
  building it needs no network.  pyspark itself is not in it: every Spark installation
  puts its own on the workers' path.  Like ``venv-pack``'s archives, ``env/bin/python`` is
  a link to the base interpreter, so the nodes need the same CPython minor version at the
  same path (Python 3.11 here); ``conda-pack`` is the way to ship the interpreter too.

Then (see docs/deploy.md for EMR, Yandex Data Proc and Databricks)::

    spark-submit --master yarn --py-files build/batch/cctv_batch.zip \\
        --archives build/batch/env.tar.gz#env --conf spark.pyspark.python=./env/bin/python \\
        batch/spark_main.py --bucket my-bucket
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import zipfile
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("batch", "functions", "shared")
# What the executors import beyond the function's own runtime (functions/requirements.txt).
EXECUTOR_EXTRAS = ("boto3", "pandas", "pyarrow")
# Provided by Spark on every node, or only needed to build things.
NEVER = {"pyspark", "py4j", "pip", "setuptools", "wheel"}


def build_zip(out: Path) -> Path:
    """The code archive: every file of the packages, minus bytecode caches."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for package in PACKAGES:
            for path in sorted((REPO / package).rglob("*")):
                if path.is_file() and "__pycache__" not in path.parts and path.suffix in (".py", ".properties"):
                    zf.write(path, path.relative_to(REPO).as_posix())
    return out


def runtime_roots() -> list[str]:
    names = []
    for line in (REPO / "functions" / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            names.append(re.split(r"[<>=!~;\[ ]", line, maxsplit=1)[0])
    return [*names, *EXECUTOR_EXTRAS]


def closure(roots: Iterable[str]) -> list[metadata.Distribution]:
    """The installed distributions ``roots`` need, following their requirements (extras left out)."""
    from packaging.requirements import Requirement

    seen: dict[str, metadata.Distribution] = {}
    todo = list(roots)
    while todo:
        name = _canonical(todo.pop())
        if name in seen or name in NEVER:
            continue
        dist = metadata.distribution(name)
        seen[name] = dist
        for raw in dist.requires or []:
            req = Requirement(raw)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return sorted(seen.values(), key=lambda d: _canonical(d.metadata["Name"]))


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def build_env(out: Path) -> tuple[Path, list[str]]:
    """A venv holding the executors' dependencies, packed as a tar.gz whose top folder is the venv."""
    dists = closure(runtime_roots())
    site = Path(sysconfig.get_paths()["purelib"])
    with tempfile.TemporaryDirectory(prefix="cctv-batch-env-") as tmp:
        env = Path(tmp) / "env"
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", "--without-pip", "--symlinks", str(env)], check=True)
        target = Path(sysconfig.get_paths(vars={"base": str(env), "platbase": str(env)})["purelib"])
        for dist in dists:
            for file in dist.files or []:
                source = Path(str(dist.locate_file(file)))
                if source.is_file() and "__pycache__" not in file.parts and _inside(source, site):
                    dest = target / source.relative_to(site)
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    os.link(source, dest) if _same_fs(source, target) else dest.write_bytes(source.read_bytes())
        out.parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(out, "w:gz", compresslevel=4) as tar:
            tar.add(env, arcname=".")
    return out, [f"{d.metadata['Name']}=={d.version}" for d in dists]


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def _same_fs(a: Path, b: Path) -> bool:
    return os.stat(a).st_dev == os.stat(b).st_dev


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m batch.dist", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=REPO / "build" / "batch", help="default build/batch")
    p.add_argument("--no-env", action="store_true", help="only the code zip")
    args = p.parse_args(argv)
    code = build_zip(args.out / "cctv_batch.zip")
    print(f"batch.dist: {code} ({code.stat().st_size / 2**10:.0f} KiB) for --py-files")
    if not args.no_env:
        env, dists = build_env(args.out / "env.tar.gz")
        print(f"batch.dist: {env} ({env.stat().st_size / 2**20:.0f} MiB) for --archives {env.name}#env: "
              f"{', '.join(dists)}")
        print(f"batch.dist: the nodes need CPython {sys.version_info.major}.{sys.version_info.minor} at "
              f"{Path(getattr(sys, '_base_executable', sys.executable)).resolve()} (env/bin/python links to it)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
