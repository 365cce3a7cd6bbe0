#!/usr/bin/env bash
# Build the Lambda deployment artifact build/cctv-classifier.zip (referenced by
# `package.artifact` in serverless.yml):
#
#   zip root/
#     numpy/ numpy.libs/ PIL/ pillow.libs/ onnxruntime/ ...   vendored functions/requirements.txt
#     functions/                                               our code (entry: functions/classify.handler)
#     shared/
#
# Lambda puts the zip root (/var/task) on sys.path, so the handler imports numpy/PIL/onnxruntime
# directly. The wheels are chosen for the Lambda python3.12 x86_64 runtime (Amazon Linux 2023,
# glibc 2.34), not for this machine, so no docker and no compiler is needed: binary wheels only.
#
# Only runtime code is shipped: functions/** and shared/** minus tests, __pycache__, *.pyc and
# functions/requirements.txt. training/, devstack/, tests/ and everything else stay out.
#
# Usage: bash scripts/build_package.sh      (from anywhere; PYTHON=... picks the interpreter for pip)
set -euo pipefail

cd "$(dirname "$0")/.."

if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi

DEPS=build/python
ARTIFACT=build/cctv-classifier.zip

rm -rf "$DEPS" "$ARTIFACT"
mkdir -p "$DEPS"

# manylinux2014 (glibc 2.17) alone is not enough: numpy>=2.3, pillow>=12 and recent onnxruntime
# publish only manylinux_2_27/2_28 x86_64 wheels, and pip does not widen an explicit --platform
# to other glibc versions by itself. Both tags are <= glibc 2.34, so they load on Lambda python3.12.
echo "build_package: vendoring functions/requirements.txt for cp312 manylinux x86_64 into $DEPS"
"$PYTHON" -m pip install \
    --quiet \
    --disable-pip-version-check \
    --no-compile \
    --only-binary=:all: \
    --implementation cp \
    --python-version 3.12 \
    --platform manylinux2014_x86_64 \
    --platform manylinux_2_28_x86_64 \
    --target "$DEPS" \
    -r functions/requirements.txt

# Drop what is never imported at runtime: console scripts, bytecode, test suites, and numpy's
# C headers/static libs (only used to compile extensions). *.dist-info stays: onnxruntime reads
# its own metadata through importlib.metadata.
rm -rf "$DEPS/bin" "$DEPS/numpy/_core/include" "$DEPS/numpy/_core/lib"
find "$DEPS" -depth -type d -name __pycache__ -exec rm -rf {} +
find "$DEPS" -type f -name '*.py[co]' -delete
find "$DEPS/numpy" "$DEPS/onnxruntime" -depth -type d \( -name tests -o -name test \) -exec rm -rf {} +

# Zip deterministically (sorted entries, fixed timestamps, normalised modes) so an unchanged
# build produces a byte-identical artifact and `serverless deploy` can skip the upload.
"$PYTHON" - "$DEPS" "$ARTIFACT" <<'PY'
import fnmatch
import os
import stat
import sys
import zipfile
from pathlib import Path

deps, artifact = Path(sys.argv[1]), Path(sys.argv[2])
CODE_DIRS = ("functions", "shared")
# Our code: no tests of any kind. Vendored deps were already pruned above; only bytecode here.
CODE_EXCLUDE_DIRS = {"__pycache__", "tests", "test", ".pytest_cache"}
CODE_EXCLUDE_FILES = ("*.pyc", "*.pyo", "test_*.py", "*_test.py", "conftest.py")
DEPS_EXCLUDE_DIRS = {"__pycache__"}
DEPS_EXCLUDE_FILES = ("*.pyc", "*.pyo")
EXCLUDE_PATHS = {"functions/requirements.txt"}


def walk(root: Path, rel_to: Path, exclude_dirs: set[str], exclude_files: tuple[str, ...]):
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in exclude_dirs)
        for name in sorted(filenames):
            if any(fnmatch.fnmatch(name, pat) for pat in exclude_files):
                continue
            path = Path(dirpath, name)
            arcname = path.relative_to(rel_to).as_posix()
            if arcname not in EXCLUDE_PATHS:
                yield path, arcname


files = {arcname: path for path, arcname in walk(deps, deps, DEPS_EXCLUDE_DIRS, DEPS_EXCLUDE_FILES)}
vendored_top = {arcname.split("/")[0] for arcname in files}
for code_dir in CODE_DIRS:
    if code_dir in vendored_top:
        sys.exit(f"build_package: a vendored dependency ships a top-level {code_dir}/, which would clash")
    for path, arcname in walk(Path(code_dir), Path("."), CODE_EXCLUDE_DIRS, CODE_EXCLUDE_FILES):
        files[arcname] = path

if not any(a.startswith("functions/") for a in files):
    sys.exit("build_package: nothing under functions/ to package")

artifact.parent.mkdir(parents=True, exist_ok=True)
tmp = artifact.with_suffix(".zip.tmp")
with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
    for arcname in sorted(files):
        path = files[arcname]
        info = zipfile.ZipInfo(arcname, date_time=(1980, 1, 1, 0, 0, 0))
        info.compress_type = zipfile.ZIP_DEFLATED
        executable = os.stat(path).st_mode & stat.S_IXUSR
        info.external_attr = ((stat.S_IFREG | (0o755 if executable else 0o644)) << 16)
        with open(path, "rb") as fh:
            zf.writestr(info, fh.read())
os.replace(tmp, artifact)
print(f"build_package: wrote {artifact} ({len(files)} files, {artifact.stat().st_size / 2**20:.1f} MiB zipped)")
PY
