#!/usr/bin/env bash
# Installs the system tools the tests and the appliance use, only when missing.
# Usage: deploy/system-deps.sh COMMAND[:PACKAGE] ...   e.g.  curl unshare:util-linux nft:nftables
# A COMMAND that is an absolute path is a file the package provides (a font, a data file).
set -u
missing=()
for spec in "$@"; do
  cmd=${spec%%:*}
  pkg=${spec#*:}
  if [ "${cmd:0:1}" = / ]; then
    [ -e "$cmd" ] || missing+=("$pkg")
  else
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "installing system packages: ${missing[*]}"
if ! command -v apt-get >/dev/null 2>&1; then
  echo "schoolgate: please install these packages with your system's package manager: ${missing[*]}" >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
    echo "schoolgate: run as root, or install: apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq >/dev/null && $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
