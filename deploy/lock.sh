#!/usr/bin/env bash
# The dependency lock: uv.lock (one resolution for every supported system) and its exports,
# requirements/{build,runtime,dev}.txt, which pip installs with --require-hashes.
#
#   deploy/lock.sh refresh PYTHON   re-resolve from the index (newest allowed versions), export
#   deploy/lock.sh check PYTHON     offline: uv.lock satisfies pyproject.toml and the exports match it
#
# PYTHON is the venv's interpreter (uv is a locked dev dependency installed beside it).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

[ $# -eq 2 ] || { echo "usage: $0 refresh|check PYTHON" >&2; exit 2; }
action=$1
PYTHON=$(cd "$(dirname "$2")" && pwd)/$(basename "$2")
UV=$(dirname "$PYTHON")/uv
[ -x "$UV" ] || { echo "schoolgate: $UV is missing: run make venv first" >&2; exit 1; }
# uv must use this interpreter and never download one (these machines reach only the registries).
export UV_PYTHON=$PYTHON UV_PYTHON_DOWNLOADS=never

# export_to DIR: the three requirements files, exactly as uv.lock says.
export_to() {
  local out=$1 args=(export --frozen --format requirements-txt --no-emit-project --quiet)
  "$UV" "${args[@]}" --only-group build >"$out/build.txt"
  "$UV" "${args[@]}" --no-dev >"$out/runtime.txt"
  "$UV" "${args[@]}" --all-extras --group build >"$out/dev.txt"
}

case "$action" in
  refresh)
    "$UV" lock --upgrade
    mkdir -p requirements
    export_to requirements
    echo "lock refreshed: review 'git diff uv.lock requirements/', run make test, commit all of it"
    ;;
  check)
    if ! "$UV" lock --check --offline --quiet; then
      echo "schoolgate: uv.lock no longer satisfies pyproject.toml: run make lock" >&2
      exit 1
    fi
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    export_to "$tmp"
    for name in build runtime dev; do
      if ! diff -q "requirements/$name.txt" "$tmp/$name.txt" >/dev/null; then
        echo "schoolgate: requirements/$name.txt is not what uv.lock says: run make lock" >&2
        exit 1
      fi
    done
    ;;
  *) echo "usage: $0 refresh|check PYTHON" >&2; exit 2 ;;
esac
