#!/usr/bin/env bash
# Fetches the exact locked artifacts for a gateway into a folder, for
# `deploy/install.sh --wheelhouse DIR` (a school with a slow, filtered or no uplink; the same bytes
# on every gateway of a trust). Run it on any machine with the index and a schoolgate checkout.
#
#   deploy/wheelhouse.sh DIR [--arch x86_64|aarch64] [--python 3.12|3.13] [--glibc 2.NN]
#
# Defaults: this machine's architecture, Python 3.13 and glibc 2.41 (Debian 13 / Raspberry Pi OS
# trixie). Ubuntu 24.04 is --python 3.12 --glibc 2.39. Packages published only as source
# (pdqhash) are fetched as their locked sdist and built on the gateway. Every file is checked
# against the lock's hashes.
set -euo pipefail
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
die() {
  echo "schoolgate wheelhouse: $*" >&2
  exit 1
}

[ $# -ge 1 ] || die "usage: $0 DIR [--arch x86_64|aarch64] [--python 3.12|3.13]"
DIR=$1
shift
ARCH=$(uname -m)
PYVER=3.13
GLIBC=2.41
while [ $# -gt 0 ]; do
  case "$1" in
    --arch) ARCH=${2:?--arch needs x86_64 or aarch64}; shift 2 ;;
    --python) PYVER=${2:?--python needs 3.12 or 3.13}; shift 2 ;;
    --glibc) GLIBC=${2:?--glibc needs a version such as 2.39}; shift 2 ;;
    *) die "unknown option $1" ;;
  esac
done
case "$ARCH" in x86_64 | aarch64) ;; *) die "unsupported architecture $ARCH" ;; esac
case "$PYVER" in 3.12 | 3.13) ;; *) die "the lock covers Python 3.12 and 3.13, not $PYVER" ;; esac
[[ "$GLIBC" =~ ^2\.([0-9]+)$ ]] || die "--glibc wants 2.NN (ldd --version on the gateway), not $GLIBC"
glibc_minor=${BASH_REMATCH[1]}

# pip runs from the checkout's venv (make venv) when there is one: it holds the locked build tools,
# so reading an sdist's metadata fetches nothing unpinned (--no-build-isolation).
PYTHON=${SCHOOLGATE_PYTHON:-$SRC/.venv/bin/python}
[ -x "$PYTHON" ] || die "$PYTHON is missing: run make venv first (or set SCHOOLGATE_PYTHON)"
abi=cp${PYVER/./}
# pip does not widen an explicit --platform to older glibc baselines: name each one.
platforms=()
for minor in $(seq "$glibc_minor" -1 5); do platforms+=(--platform "manylinux_2_${minor}_$ARCH"); done
platforms+=(--platform "manylinux2014_$ARCH" --platform "manylinux2010_$ARCH" --platform "manylinux1_$ARCH")
mkdir -p "$DIR"
PIP_CONSTRAINT="" "$PYTHON" -m pip --disable-pip-version-check --isolated download --quiet \
  --require-hashes --no-deps --no-build-isolation --dest "$DIR" \
  "${platforms[@]}" --python-version "$PYVER" --implementation cp --abi "$abi" \
  -r "$SRC/requirements/build.txt" -r "$SRC/requirements/runtime.txt"
echo "wheelhouse for $ARCH, Python $PYVER, glibc $GLIBC: $(find "$DIR" -maxdepth 1 -type f | wc -l) files in $DIR"
