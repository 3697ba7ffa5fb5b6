#!/usr/bin/env bash
# Prints the path of a Python 3.12 or 3.13 interpreter (the versions the dependency lock covers),
# or explains why there is none.
# Order: python3.13, python3.12, python3 on PATH, then pyenv's installed versions (newest first).
# pyenv shims answer for versions that are not selected, so every candidate is actually run.
set -u
ok() { "$1" -c 'import sys; sys.exit(0 if (3, 12) <= sys.version_info[:2] <= (3, 13) else 1)' >/dev/null 2>&1; }
for name in python3.13 python3.12 python3; do
  c=$(command -v "$name" 2>/dev/null) || continue
  if ok "$c"; then
    # Resolve a pyenv shim to the real interpreter so the venv does not depend on pyenv state.
    "$c" -c 'import sys; print(sys.executable)'
    exit 0
  fi
done
root=${PYENV_ROOT:-$HOME/.pyenv}
if [ -d "$root/versions" ]; then
  # shellcheck disable=SC2012  # pyenv version folder names hold no spaces; ls sorts them simply
  for d in $(ls -1d "$root"/versions/3.* 2>/dev/null | sort -t. -k2,2nr -k3,3nr); do
    if [ -x "$d/bin/python3" ] && ok "$d/bin/python3"; then
      echo "$d/bin/python3"
      exit 0
    fi
  done
fi
found=$(command -v python3 2>/dev/null) && found=" (python3 here is $("$found" -V 2>&1))"
cat >&2 <<MSG
schoolgate needs Python 3.12 or 3.13${found:-}: mitmproxy 12 requires 3.12 (mitmproxy 11 pins an
h11 with a request-smuggling flaw), and the dependency lock covers 3.12 and 3.13.
None was found on PATH (python3.13, python3.12, python3) or among pyenv versions.
Install one, e.g. on Debian 13 / Raspberry Pi OS trixie / Ubuntu 24.04:
  sudo apt-get install python3 python3-venv python3-dev
or with pyenv:  pyenv install 3.13
MSG
exit 1
