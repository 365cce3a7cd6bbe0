# Shell helpers shared by scripts/build_package.sh, scripts/ci_package_check.sh and bench/shipped.py.

# Print a CPython 3.12 interpreter (Lambda's python3.12 runtime) on an x86_64 host, or fail:
# $PYTHON312, python3.12 on PATH, or pyenv's 3.12.x.
find_python312() {
    [[ $(uname -m) == x86_64 ]] || return 1
    local candidates=("${PYTHON312:-}" python3.12) c
    if command -v pyenv >/dev/null; then candidates+=("$(pyenv root)"/versions/3.12*/bin/python3.12); fi
    for c in "${candidates[@]}"; do
        if [[ -n $c ]] && "$c" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' 2>/dev/null; then
            echo "$c"; return 0
        fi
    done
    return 1
}
