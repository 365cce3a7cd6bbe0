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
source scripts/lib.sh

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

# Bytecode for what a cold start imports. Lambda's /var/task is read-only, so without shipped
# .pyc files every cold start compiles numpy's, Pillow's, onnxruntime's and our Python sources
# again (`make bench`: ~50 ms for our modules alone). Only the modules a frame or a clip event
# imports are compiled (about half the bytecode of everything), to stay well inside 250 MB.
# The .pyc are for CPython 3.12 (the runtime in serverless.yml) and "unchecked-hash": the zip's
# fixed timestamps would defeat mtime-checked ones, and the zip never changes once deployed.
PYC=build/pyc
rm -rf "$PYC"
PY312=$(find_python312 || true)
# Optional: a CPython 3.12 that cannot load the wheels (glibc < 2.28, musl) only costs the bytecode.
if [[ -z $PY312 ]]; then
    echo "build_package: WARNING: no CPython 3.12 on an x86_64 host (set PYTHON312): the package ships" \
         "without bytecode, so each cold start compiles the Python sources again" >&2
elif ! "$PY312" -I -S -B - "$DEPS" "$PYC" <<'PY'
import importlib
import importlib.util
import py_compile
import sys
from pathlib import Path

deps, out = Path(sys.argv[1]).resolve(), Path(sys.argv[2])
repo = Path.cwd().resolve()
sys.path[:0] = [str(deps), str(repo)]
# What a frame event imports, then what the first clip adds (functions.video imports lazily).
for name in ("functions.classify", "shared.runtime", "onnxruntime", "functions.video.pipeline", "functions.annotate",
             "av", "av.video.reformatter", "PIL.ImageDraw", "PIL.ImageFont"):
    importlib.import_module(name)
import PIL.Image  # noqa: E402

PIL.Image.init()  # the image plugins, which Image.open imports on first use
n = 0
for module in list(sys.modules.values()):
    source = Path(getattr(module, "__file__", None) or "/").resolve()
    if source.suffix != ".py":
        continue
    for root in (deps, repo):
        if source.is_relative_to(root) and (root is deps or source.parts[len(repo.parts)] in ("functions", "shared")):
            arcname = source.relative_to(root).as_posix()
            py_compile.compile(str(source), cfile=str(out / importlib.util.cache_from_source(arcname)),
                               dfile=arcname, doraise=True,
                               invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH)
            n += 1
            break
print(f"build_package: {n} modules compiled with {sys.executable}")
PY
then
    echo "build_package: WARNING: $PY312 could not import the vendored packages; the package ships without" \
         "bytecode" >&2
    rm -rf "$PYC"
fi

# Zip deterministically (sorted entries, fixed timestamps, normalised modes) so an unchanged
# build produces a byte-identical artifact and `serverless deploy` can skip the upload.
"$PYTHON" - "$DEPS" "$ARTIFACT" "$PYC" <<'PY'
import fnmatch
import importlib.util
import os
import stat
import sys
import zipfile
from pathlib import Path

deps, artifact, pyc = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
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

if pyc.is_dir():  # __pycache__/*.cpython-312.pyc of the cold path, next to their sources
    for path, arcname in walk(pyc, pyc, set(), ()):
        if importlib.util.source_from_cache(arcname) not in files:
            sys.exit(f"build_package: {arcname} has no source in the package")
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
