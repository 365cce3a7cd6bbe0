#!/usr/bin/env bash
# CI check for the deployment package; runs offline (only PyPI and the npm registry are used).
#
#   1. npm ci                               -> serverless 3.x from package-lock.json
#   2. scripts/build_package.sh             -> build/cctv-classifier.zip (code + vendored deps)
#   3. import smoke test of the artifact under a local CPython 3.12, if one is found, and
#      scripts/zip_import_check.py: every module of ours in the zip imports with only the zip and boto3
#   4. serverless package (dummy credentials, telemetry/notifications/update checks off)
#   5. cfn-lint on .serverless/cloudformation-template-update-stack.json
#   6. scripts/package_size.py: print the unzipped size, fail over 250 MB, and check that the
#      template's CodeSha256 is the artifact that was measured
#
# Run from anywhere: bash scripts/ci_package_check.sh
# Needs: node >= 18 and npm on PATH; .venv/bin/python with requirements.txt installed (cfn-lint).
# Environment overrides: PYTHON (default .venv/bin/python), CFN_LINT, PYTHON312, STAGE (default dev),
# SKIP_NPM_CI=1 (reuse node_modules when it is already installed).
set -euo pipefail

cd "$(dirname "$0")/.."
started=$SECONDS
step() { printf '\n==> [%ss] %s\n' "$((SECONDS - started))" "$*"; }
die() { echo "ci_package_check: $*" >&2; exit 1; }

PYTHON=${PYTHON:-.venv/bin/python}
[[ -x $PYTHON ]] || die "$PYTHON not found; build the venv first (make venv) or set PYTHON"
if [[ -z ${CFN_LINT:-} ]]; then
    CFN_LINT=$(dirname "$PYTHON")/cfn-lint
    [[ -x $CFN_LINT ]] || CFN_LINT=$(command -v cfn-lint || true)
fi
[[ -n $CFN_LINT && -x $CFN_LINT ]] || die "cfn-lint not found (it is in requirements.txt); set CFN_LINT"
command -v node >/dev/null || die "node is not on PATH (node >= 18 is needed for serverless 3)"
node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 18 ? 0 : 1)' \
    || die "node $(node --version) is too old; serverless 3 needs node >= 18"
command -v npm >/dev/null || die "npm is not on PATH"
STAGE=${STAGE:-dev}
unpacked='' sls_log=''
trap 'rm -rf ${unpacked:+"$unpacked"} ${sls_log:+"$sls_log"}' EXIT
TEMPLATE=.serverless/cloudformation-template-update-stack.json
ARTIFACT=build/cctv-classifier.zip

# --- 1. npm deps -------------------------------------------------------------------------
if [[ ${SKIP_NPM_CI:-0} == 1 && -x node_modules/.bin/serverless ]]; then
    step "npm ci skipped (SKIP_NPM_CI=1)"
else
    step "npm ci"
    timeout 900 npm ci --no-audit --no-fund --prefer-offline --loglevel=error
fi

# --- 2. artifact -------------------------------------------------------------------------
step "build $ARTIFACT"
PYTHON=$PYTHON timeout 900 bash scripts/build_package.sh

# --- 3. import smoke test ----------------------------------------------------------------
# The wheels are cp312 manylinux_2_28 x86_64; any CPython 3.12 on glibc >= 2.28 x86_64 can load
# them. -I -S keeps this interpreter's own site-packages out, so only the zip's content counts.
source scripts/lib.sh
PY312=$(find_python312 || true)
if [[ -n $PY312 ]]; then
    step "import smoke test of $ARTIFACT with $PY312"
    unpacked=$(mktemp -d)
    "$PY312" -I -S -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$ARTIFACT" "$unpacked"
    (cd "$unpacked" && "$PY312" -I -S -B -c '
import sys
sys.path.insert(0, ".")  # what Lambda does with /var/task
import numpy, PIL.Image, onnxruntime
import functions.classify
assert callable(functions.classify.handler), "functions.classify.handler is not callable"
import os
# build_package.sh ships the cold path compiled for 3.12 (Lambda cannot write __pycache__).
def unchecked_pyc(module):  # present, and flags = 1 (hash-based, unchecked): see PEP 552
    path = sys.modules[module].__spec__.cached or ""
    return os.path.isfile(path) and open(path, "rb").read(8)[4:8] == bytes([1, 0, 0, 0])
no_pyc = [m for m in ("numpy", "PIL.Image", "onnxruntime", "functions.classify", "shared.runtime")
          if not unchecked_pyc(m)]
assert not no_pyc, f"the package ships no unchecked-hash bytecode for {no_pyc}"
assert "av" not in sys.modules, "importing the handler must not load PyAV (clips import it lazily)"
import av, av.video.reformatter  # what functions.video imports once a clip arrives
assert "libx264" in av.codecs_available, "the vendored FFmpeg has no libx264 encoder for annotated clips"
print(f"imports OK: numpy {numpy.__version__}, pillow {PIL.__version__}, onnxruntime {onnxruntime.__version__} "
      f"{onnxruntime.get_available_providers()}, av {av.__version__} (FFmpeg {av.ffmpeg_version_info}), "
      "functions.classify.handler")
')

    # Lambda supplies boto3 (the pin we test with) and nothing else beside the zip.
    boto3_pin=$(grep -E '^boto3==' requirements-runtime.txt)
    boto3_dir=build/lambda-boto3
    if [[ $(cat "$boto3_dir/.pin" 2>/dev/null) != "$boto3_pin" ]]; then
        step "vendoring $boto3_pin (what Lambda's runtime provides) into $boto3_dir"
        rm -rf "$boto3_dir"
        "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-compile --only-binary=:all: \
            --implementation cp --python-version 3.12 --platform manylinux2014_x86_64 \
            --platform manylinux_2_28_x86_64 --target "$boto3_dir" "$boto3_pin"
        rm -rf "$boto3_dir/bin"
        echo "$boto3_pin" > "$boto3_dir/.pin"
    fi
    step "every module of ours in $ARTIFACT imports with only the zip and boto3"
    "$PYTHON" scripts/zip_import_check.py --python "$PY312" --boto3 "$boto3_dir" "$ARTIFACT"
else
    step "import smoke test skipped (needs an x86_64 host with CPython 3.12; set PYTHON312)"
fi

# --- 4. serverless package ---------------------------------------------------------------
step "serverless package --stage $STAGE (offline, dummy credentials)"
export AWS_ACCESS_KEY_ID=dummy AWS_SECRET_ACCESS_KEY=dummy AWS_SESSION_TOKEN=dummy
export AWS_REGION=eu-west-1 AWS_DEFAULT_REGION=eu-west-1 AWS_SDK_LOAD_CONFIG=0
unset AWS_PROFILE AWS_DEFAULT_PROFILE
export SLS_TELEMETRY_DISABLED=1 SLS_TRACKING_DISABLED=1 SLS_NOTIFICATIONS_MODE=off \
    SLS_DEPRECATION_DISABLE='*' SLS_DISABLE_AUTO_UPDATE=1 SLS_INTERACTIVE_SETUP_DISABLE=1 \
    SLS_AWS_REQUEST_MAX_RETRIES=0 CI=1 FORCE_COLOR=0
rm -rf .serverless
sls_log=$(mktemp)
if ! timeout 300 npx --no-install serverless package --stage "$STAGE" 2>&1 | tee "$sls_log"; then
    die "serverless package failed"
fi
# v3's schema predates python3.12, so "provider.runtime ... allowed values" is expected (see the
# comment in serverless.yml). Any other configuration warning is a real mistake: fail on it.
unexpected=$(grep -E "^\s+at '" "$sls_log" | grep -vE "^\s+at '(provider|functions\.[A-Za-z0-9_-]+)\.runtime': must be equal to one of the allowed values" || true)
[[ -z $unexpected ]] || die "serverless reported configuration problems:"$'\n'"$unexpected"
[[ -s $TEMPLATE ]] || die "serverless package did not write $TEMPLATE"

# --- 5. cfn-lint ---------------------------------------------------------------------------
step "cfn-lint $TEMPLATE"
"$CFN_LINT" --version
"$CFN_LINT" "$TEMPLATE"
echo "cfn-lint: no errors or warnings"

# --- 6. size -------------------------------------------------------------------------------
step "unzipped package size"
shopt -s nullglob
"$PYTHON" scripts/package_size.py --template "$TEMPLATE" "$ARTIFACT" .serverless/*.zip

step "ci_package_check: OK in $((SECONDS - started))s"
