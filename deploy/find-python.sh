#!/usr/bin/env bash
# Prints the path of a Python >= 3.12 interpreter, or explains why there is none.
# Order: python3.13, python3.12, python3 on PATH, then pyenv's installed versions (newest first).
# pyenv shims answer for versions that are not selected, so every candidate is actually run.
set -u
ok() { "$1" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 12) else 1)' >/dev/null 2>&1; }
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
cat >&2 <<'MSG'
schoolgate needs Python 3.12 or newer (mitmproxy 12 requires it; mitmproxy 11 pins a vulnerable h11).
None was found on PATH (python3.13, python3.12, python3) or among pyenv versions.
Install one, e.g. on Debian/Ubuntu/Raspberry Pi OS:  sudo apt-get install python3.13 python3.13-venv
or with pyenv:  pyenv install 3.13
MSG
exit 1
