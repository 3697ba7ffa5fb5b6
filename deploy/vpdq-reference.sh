#!/usr/bin/env bash
# Builds Meta's vpdq Python package (the C++ reference, compiled against FFmpeg's libraries) into
# a virtualenv, for the compatibility test only: schoolgate itself hashes with PyAV and pdqhash.
# Usage: deploy/vpdq-reference.sh VENV_PYTHON
set -u
py=${1:?usage: deploy/vpdq-reference.sh VENV_PYTHON}
"$py" -c 'import vpdq' 2>/dev/null && exit 0
if ! pkg-config --exists libavcodec libavformat libswscale 2>/dev/null || ! command -v cmake >/dev/null \
   || ! command -v g++ >/dev/null; then
  if command -v apt-get >/dev/null && [ "$(id -u)" -eq 0 ]; then
    echo "installing FFmpeg development libraries to build the vpdq reference"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends \
      pkg-config cmake g++ libavcodec-dev libavformat-dev libavutil-dev libswscale-dev \
      libswresample-dev libavfilter-dev libavdevice-dev >/dev/null || exit 1
  else
    echo "vpdq reference: needs pkg-config, cmake, g++ and FFmpeg's -dev libraries" >&2
    exit 1
  fi
fi
echo "building the vpdq reference (about a minute)"
"$py" -m pip install --quiet 'vpdq==0.2.5'
