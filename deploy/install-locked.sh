#!/usr/bin/env bash
# Installs schoolgate and exactly the locked artifacts into a virtualenv: every package pinned and
# hash-checked, nothing resolved or fetched unpinned (not even build tools for sdists).
#
#   deploy/install-locked.sh PYTHON REQUIREMENTS [--editable] [--wheelhouse DIR]
#
#   PYTHON        the virtualenv's interpreter
#   REQUIREMENTS  requirements/runtime.txt (the appliance) or requirements/dev.txt (tests, tools)
#   --editable    install the checkout in development mode (make test, make run)
#   --wheelhouse  install only from DIR (made by deploy/wheelhouse.sh), never from an index
#   --no-cache    leave no pip cache behind (the gateway installer: nothing outside its own paths)
#
# The steps: the build tools of requirements/build.txt first (pip itself, setuptools, Cython,
# numpy), then REQUIREMENTS with --no-deps (the lock is complete) and --no-build-isolation (so an
# sdist such as pdqhash builds with the locked tools), then schoolgate, then `pip check`.
set -euo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
die() {
  echo "schoolgate install: $*" >&2
  exit 1
}

[ $# -ge 2 ] || die "usage: $0 PYTHON REQUIREMENTS [--editable] [--wheelhouse DIR]"
PYTHON=$1
REQUIREMENTS=$2
shift 2
EDITABLE=()
CACHE=()
SOURCE=(--isolated)
while [ $# -gt 0 ]; do
  case "$1" in
    --editable) EDITABLE=(-e); shift ;;
    --no-cache) CACHE=(--no-cache-dir); shift ;;
    --wheelhouse)
      dir=${2:?--wheelhouse needs a directory}
      [ -d "$dir" ] || die "wheelhouse $dir is not a directory"
      SOURCE=(--no-index --find-links "$(cd "$dir" && pwd)")
      shift 2
      ;;
    *) die "unknown option $1" ;;
  esac
done
[ -r "$REQUIREMENTS" ] || die "cannot read $REQUIREMENTS"
[ -r "$SRC/requirements/build.txt" ] || die "cannot read $SRC/requirements/build.txt"

# --isolated: a machine's pip configuration (extra indexes, find-links, constraints) must not
# change what gets installed; the hashes would refuse it anyway, with a less clear message.
# --no-index with a wheelhouse keeps every artifact local.
pip_() {
  PIP_CONSTRAINT="" PIP_FIND_LINKS="" "$PYTHON" -m pip --disable-pip-version-check \
    install --quiet --require-hashes --no-deps "${CACHE[@]}" "${SOURCE[@]}" "$@"
}

pip_ -r "$SRC/requirements/build.txt"
pip_ --no-build-isolation -r "$REQUIREMENTS"
# schoolgate itself is this checkout, not an index artifact: no hash to check, built locally.
PIP_CONSTRAINT="" "$PYTHON" -m pip --disable-pip-version-check install --quiet --no-deps \
  --no-build-isolation --no-index "${CACHE[@]}" "${EDITABLE[@]}" "$SRC"
"$PYTHON" -m pip --disable-pip-version-check check >/dev/null ||
  die "the installed packages do not fit together (pip check):
$("$PYTHON" -m pip check)"
