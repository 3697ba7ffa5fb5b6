#!/usr/bin/env bash
# Installs schoolgate on a gateway, or removes it. Safe to run again: it converges.
#
#   sudo deploy/install.sh --student-interface wlan0      install (or upgrade) and start
#   sudo deploy/install.sh --uninstall                    remove code, units and firewall rules;
#                                                         keep configuration, data, CA and logs
#   sudo deploy/install.sh --uninstall --purge            remove those too, and the service user
#
# Options:
#   --student-interface IFACE  pupils' interface (repeatable); written into a new configuration
#   --user NAME                service user (default schoolgate)
#   --python PATH              interpreter for the virtualenv, Python 3.12 or 3.13
#                              (default: deploy/find-python.sh)
#   --wheelhouse DIR           install the locked packages from DIR only (made by
#                              deploy/wheelhouse.sh), never from the package index: for gateways
#                              with a slow or filtered uplink, or none
#   --venv PATH                use this existing virtualenv (schoolgate installed in it) instead of
#                              building /opt/schoolgate/venv; /opt/schoolgate/venv links to it
#   --root DIR                 install into DIR as if it were / (a DESTDIR-style dry run for tests
#                              and image builds); implies --no-system
#   --no-system                do not create the user, load firewall rules or start services
#                              (units are still enabled, offline, with systemctl --root)
#
# Layout (ownership and modes):
#   /opt/schoolgate/venv                 root, 0755: code the service cannot modify
#   /etc/schoolgate/schoolgate.yaml      root:USER 0640, kept on upgrade
#   /etc/schoolgate/secrets/             USER 0700; webhook-secret 0600 (alerts' secret_file)
#   /var/lib/schoolgate/                 USER 0750: banks, alert outbox; ca/ 0700 (the CA key)
#   /var/log/schoolgate/                 USER 0750: the audit log (decisions.jsonl)
#   /etc/systemd/system/schoolgate.service, schoolgate-nft.service, schoolgate-resolver.service,
#   schoolgate-leases.service, schoolgate-fastpath.service, schoolgate-console.service,
#   schoolgate-sniffer@.service
set -euo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROOT=""
SERVICE_USER=schoolgate
PYTHON=""
VENV_FROM=""
WHEELHOUSE=""
SYSTEM=1
UNINSTALL=0
PURGE=0
INTERFACES=()
UNITS=(schoolgate.service schoolgate-nft.service schoolgate-resolver.service schoolgate-leases.service
  schoolgate-fastpath.service schoolgate-console.service schoolgate-sniffer@.service)

die() {
  echo "schoolgate install: $*" >&2
  exit 1
}
say() { echo "==> $*"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --student-interface) INTERFACES+=("${2:?--student-interface needs an interface name}"); shift 2 ;;
    --user) SERVICE_USER=${2:?--user needs a name}; shift 2 ;;
    --python) PYTHON=${2:?--python needs a path}; shift 2 ;;
    --venv) VENV_FROM=${2:?--venv needs a path}; shift 2 ;;
    --wheelhouse) WHEELHOUSE=${2:?--wheelhouse needs a directory}; shift 2 ;;
    --root) ROOT=${2:?--root needs a directory}; SYSTEM=0; shift 2 ;;
    --no-system) SYSTEM=0; shift ;;
    --uninstall) UNINSTALL=1; shift ;;
    --purge) PURGE=1; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
[ "$PURGE" -eq 0 ] || [ "$UNINSTALL" -eq 1 ] || die "--purge goes with --uninstall"
if [ -n "$ROOT" ]; then
  mkdir -p "$ROOT"
  ROOT=$(cd "$ROOT" && pwd)
  [ "$ROOT" != / ] || ROOT=""
fi

OPT=$ROOT/opt/schoolgate
ETC=$ROOT/etc/schoolgate
LIB=$ROOT/var/lib/schoolgate
LOG=$ROOT/var/log/schoolgate
FASTPATH_STATE=$ROOT/var/lib/schoolgate-fastpath  # schoolgate-fastpath.service's StateDirectory
UNITDIR=$ROOT/etc/systemd/system
CONFIG=$ETC/schoolgate.yaml
BIN=$OPT/venv/bin/schoolgate

# Every schoolgate command the installer runs sees the installed tree, not the live system's.
sg() { SCHOOLGATE_CONFIG=$CONFIG SCHOOLGATE_DATA_DIR=$LIB "$BIN" "$@"; }
systemctl_() {
  if [ "$SYSTEM" -eq 1 ]; then systemctl "$@"; else systemctl --root="${ROOT:-/}" "$@"; fi
}

# os_field NAME FILE: a value from os-release, read (not sourced: it is data, not a script).
os_field() { sed -n "s/^$1=//p" "$2" | tr -d "\"'" | head -n 1; }

SUPPORTED="Debian 13 (trixie), Raspberry Pi OS (trixie, 64-bit) and Ubuntu 24.04 or newer"

check_os() {
  local release=${SCHOOLGATE_OS_RELEASE:-/etc/os-release} arch=${SCHOOLGATE_ARCH:-$(uname -m)}
  local id="" version="" major
  [ -r "$release" ] || die "cannot read $release: supported are $SUPPORTED"
  id=$(os_field ID "$release")
  version=$(os_field VERSION_ID "$release")
  OS_CODENAME=$(os_field VERSION_CODENAME "$release")
  major=${version%%.*}
  case "$arch" in
    x86_64 | aarch64) ;;
    *) die "unsupported architecture $arch: use the 64-bit Raspberry Pi OS (aarch64) or an x86_64 system" ;;
  esac
  case "$id" in
    debian | raspbian) [ "${major:-0}" -ge 12 ] 2>/dev/null || die "Debian $version is too old: supported are $SUPPORTED" ;;
    ubuntu) [ "${major:-0}" -ge 22 ] 2>/dev/null || die "Ubuntu $version is too old: supported are $SUPPORTED" ;;
    *) die "unsupported system '$id': supported are $SUPPORTED" ;;
  esac
}

# The lock (requirements/*.txt) covers CPython 3.12 and 3.13.
python_ok() { "$1" -c 'import sys; sys.exit(0 if (3, 12) <= sys.version_info[:2] <= (3, 13) else 1)' >/dev/null 2>&1; }

find_python() {
  if [ -n "$PYTHON" ]; then
    python_ok "$PYTHON" || die "$PYTHON is not Python 3.12 or 3.13 (the versions the lock covers)"
  elif ! PYTHON=$("$SRC/deploy/find-python.sh" 2>/dev/null); then
    case "${OS_CODENAME:-}" in
      bookworm | bullseye)
        die "this is $OS_CODENAME, whose python3 is 3.11; schoolgate needs 3.12 or 3.13 (mitmproxy 12;
  mitmproxy 11 pins an h11 with a request-smuggling flaw, which would be a filter bypass).
  The supported ways forward:
    1. upgrade the gateway to Debian 13 / Raspberry Pi OS trixie (python3 is 3.13), or install a
       fresh Raspberry Pi OS (trixie) image, then run this installer again; or
    2. have an administrator provide Python 3.12 or 3.13 outside /root and /home (for example
       pyenv with PYENV_ROOT=/opt/pyenv, then pyenv install 3.13) and run again with
       --python /opt/pyenv/versions/3.13.X/bin/python3.
  See docs/install.md (\"Supported systems\")."
        ;;
      *) die "no Python 3.12 or 3.13 found. $("$SRC/deploy/find-python.sh" 2>&1 >/dev/null)" ;;
    esac
  fi
  local prefix
  prefix=$("$PYTHON" -c 'import sys; print(sys.base_prefix)')
  python_build_deps
  case "$prefix/" in
    /root/* | /home/*)
      # The service runs with ProtectHome=yes as an unprivileged user: it could not start.
      [ "$SYSTEM" -eq 0 ] || die "$PYTHON lives under $prefix, which the service cannot read (ProtectHome=yes): install Python under /opt or /usr/local"
      ;;
  esac
}

# pdqhash is published only as source: building it needs the interpreter's headers, and Debian's
# python3.X makes virtualenvs only with python3.X-venv. Installed for the system's Python; an
# administrator-provided one (pyenv, /opt) brings its own.
python_build_deps() {
  local version include missing=()
  version=$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
  include=$("$PYTHON" -c 'import sysconfig; print(sysconfig.get_path("include"))')
  [ -e "$include/Python.h" ] || missing+=("python$version-dev")
  if [ "$(dirname "$PYTHON")" = /usr/bin ] && command -v dpkg-query >/dev/null &&
    ! dpkg-query -W -f='${Status}' "python$version-venv" 2>/dev/null | grep -q 'ok installed'; then
    missing+=("python$version-venv")
  fi
  [ ${#missing[@]} -gt 0 ] || return 0
  if [ "$SYSTEM" -eq 1 ] && [ "$(dirname "$PYTHON")" = /usr/bin ] && command -v apt-get >/dev/null; then
    say "installing ${missing[*]} (to build pdqhash and make the virtualenv)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
      die "could not install ${missing[*]}: install them, then run again"
  else
    die "$PYTHON lacks ${missing[*]} (its C headers or venv support): install them, then run again"
  fi
}

install_venv() {
  mkdir -p "$OPT"
  chmod 0755 "$OPT"
  if [ -n "$VENV_FROM" ]; then
    [ -x "$VENV_FROM/bin/schoolgate" ] || die "$VENV_FROM has no bin/schoolgate: install schoolgate into it first"
    python_ok "$VENV_FROM/bin/python" || die "$VENV_FROM is not a Python 3.12+ virtualenv"
    [ -L "$OPT/venv" ] || [ ! -e "$OPT/venv" ] || die "$OPT/venv exists and is not a link: remove it or drop --venv"
    ln -sfn "$(cd "$VENV_FROM" && pwd)" "$OPT/venv"
    return
  fi
  find_python
  [ ! -L "$OPT/venv" ] || rm -f "$OPT/venv"
  if [ -x "$OPT/venv/bin/python" ] && ! python_ok "$OPT/venv/bin/python"; then
    say "replacing $OPT/venv (its Python is not one the lock covers)"
    rm -rf "$OPT/venv"
  fi
  [ -x "$OPT/venv/bin/python" ] || "$PYTHON" -m venv "$OPT/venv" ||
    die "$PYTHON could not make a virtualenv (on Debian and Ubuntu: apt-get install python3-venv)"
  say "installing schoolgate and its locked dependencies into $OPT/venv${WHEELHOUSE:+ from $WHEELHOUSE}"
  local from=()
  [ -z "$WHEELHOUSE" ] || from=(--wheelhouse "$WHEELHOUSE")
  "$SRC/deploy/install-locked.sh" "$OPT/venv/bin/python" "$SRC/requirements/runtime.txt" \
    --no-cache "${from[@]}"
}

ensure_user() {
  if [ "$SYSTEM" -eq 1 ] && ! id "$SERVICE_USER" >/dev/null 2>&1; then
    say "creating system user $SERVICE_USER"
    useradd --system --user-group --home-dir /var/lib/schoolgate --no-create-home \
      --shell /usr/sbin/nologin --comment "schoolgate content filter" "$SERVICE_USER"
  fi
  if ! id "$SERVICE_USER" >/dev/null 2>&1; then
    die "user $SERVICE_USER does not exist (with --root or --no-system, pass an existing --user)"
  fi
  SERVICE_GROUP=$(id -gn "$SERVICE_USER")
}

# owner MODE USER GROUP PATH: chown only where we may (a non-root dry run keeps its own files).
owner() {
  chmod "$1" "$4"
  if [ "$(id -u)" -eq 0 ]; then chown "$2:$3" "$4"; fi
}

make_dirs() {
  mkdir -p "$ETC/secrets" "$LIB/ca" "$LOG" "$UNITDIR"
  owner 0750 root "$SERVICE_GROUP" "$ETC"
  owner 0700 "$SERVICE_USER" "$SERVICE_GROUP" "$ETC/secrets"
  owner 0750 "$SERVICE_USER" "$SERVICE_GROUP" "$LIB"
  owner 0700 "$SERVICE_USER" "$SERVICE_GROUP" "$LIB/ca"
  owner 0750 "$SERVICE_USER" "$SERVICE_GROUP" "$LOG"
}

# set_key SECTION KEY VALUE: replace `  KEY: ...` inside top-level SECTION, keeping the comment.
set_key() {
  local tmp count
  tmp=$(mktemp "$CONFIG.XXXXXX")
  awk -v section="$1" -v key="$2" -v value="$3" '
    /^[A-Za-z_]+:/ { current = substr($1, 1, length($1) - 1) }
    current == section && $0 ~ "^  " key ":" && !done {
      comment = ""
      if (match($0, /[ ]+#.*/)) { comment = substr($0, RSTART); sub(/^[ ]+/, "  ", comment) }
      print "  " key ": " value comment; done = 1; replaced++; next
    }
    { print }
    END { print replaced + 0 > "/dev/stderr" }
  ' "$CONFIG" >"$tmp" 2>"$tmp.count"
  count=$(cat "$tmp.count")
  rm -f "$tmp.count"
  if [ "$count" != 1 ]; then
    rm -f "$tmp"
    die "could not set $1.$2 in $CONFIG"
  fi
  mv "$tmp" "$CONFIG"
}

write_config() {
  if [ -e "$CONFIG" ]; then
    say "keeping $CONFIG"
  else
    if [ ${#INTERFACES[@]} -eq 0 ]; then
      [ -z "$ROOT" ] && [ -e /sys/class/net/wlan0 ] && INTERFACES=(wlan0)
      [ ${#INTERFACES[@]} -gt 0 ] || die "name the pupils' interface: --student-interface IFACE (e.g. wlan0)"
    fi
    say "writing $CONFIG (student interfaces: ${INTERFACES[*]})"
    cp "$SRC/config/schoolgate.yaml" "$CONFIG"
    local list
    list=$(printf '%s, ' "${INTERFACES[@]}")
    set_key proxy mode transparent
    set_key proxy listen_host 0.0.0.0
    set_key audit path /var/log/schoolgate/decisions.jsonl
    set_key gateway student_interfaces "[${list%, }]"
    set_key resolver enabled true
    set_key resolver fast_path_socket /run/schoolgate-fastpath/fastpath.sock
  fi
  owner 0640 root "$SERVICE_GROUP" "$CONFIG"
  sg check-config "$CONFIG" >/dev/null || die "$CONFIG is not valid (see above)"
  sg nft render >/dev/null || die "$CONFIG cannot drive the gateway firewall (see above)"
}

write_secrets() {
  local secret=$ETC/secrets/webhook-secret
  if [ ! -e "$secret" ]; then
    (umask 077 && od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$secret")
  fi
  owner 0600 "$SERVICE_USER" "$SERVICE_GROUP" "$secret"
}

# has_command NAME: whether this schoolgate has that subcommand (`ca` and `sniff` come from another
# branch of work); the command list is read once.
SG_COMMANDS=""
has_command() {
  [ -n "$SG_COMMANDS" ] || SG_COMMANDS=$(sg --help | awk '/^    [a-z]/ { print $1 }')
  grep -qx "$1" <<<"$SG_COMMANDS"
}

make_ca() {
  # `schoolgate ca init` makes the name-constrained CA in <data_dir>/ca, idempotently.
  if has_command ca; then
    say "creating the CA in $LIB/ca (kept if it exists)"
    sg ca init
    chown -R "$SERVICE_USER:$SERVICE_GROUP" "$LIB/ca" 2>/dev/null || true
    chmod -R go-rwx "$LIB/ca"
  else
    say "this schoolgate has no \`ca init\`: the proxy creates its CA in $LIB/ca at first start"
  fi
}

install_units() {
  local unit
  for unit in "${UNITS[@]}"; do
    sed -e "s/^User=schoolgate$/User=$SERVICE_USER/" -e "s/^Group=schoolgate$/Group=$SERVICE_GROUP/" \
      "$SRC/deploy/systemd/$unit" >"$UNITDIR/$unit.tmp"
    chmod 0644 "$UNITDIR/$unit.tmp"
    mv "$UNITDIR/$unit.tmp" "$UNITDIR/$unit"
  done
  [ "$SYSTEM" -eq 0 ] || systemctl daemon-reload
  systemctl_ enable --quiet schoolgate-nft.service schoolgate-resolver.service \
    schoolgate-leases.service schoolgate-fastpath.service schoolgate.service \
    schoolgate-console.service
  if has_command sniff; then
    local iface
    for iface in $(sg check-config --json | "$OPT/venv/bin/python" -c \
      'import json, sys; print(" ".join(json.load(sys.stdin)["gateway"]["student_interfaces"]))'); do
      systemctl_ enable --quiet "schoolgate-sniffer@$iface.service"
    done
  fi
}

start_services() {
  [ "$SYSTEM" -eq 1 ] || return 0
  systemctl reload-or-restart schoolgate-nft.service
  systemctl restart schoolgate-fastpath.service schoolgate-resolver.service \
    schoolgate-leases.service schoolgate.service schoolgate-console.service
  if has_command sniff; then
    systemctl restart 'schoolgate-sniffer@*.service' || true
  fi
}

next_steps() {
  cat <<EOF

schoolgate is installed${ROOT:+ into $ROOT}.
  Configuration   $CONFIG
                  after editing: sudo systemctl reload schoolgate schoolgate-nft
  CA for devices  $LIB/ca/ -- export it with \`schoolgate ca export\` and roll it out
                  as docs/install.md ("The interception CA and roll-out") describes
  Metrics         http://127.0.0.1:9861/metrics (Prometheus; point Grafana's Prometheus at it)
  Audit log       $LOG/decisions.jsonl    service log: journalctl -u schoolgate -f
  Status          systemctl status schoolgate schoolgate-nft; sudo nft list table inet schoolgate
  Alert secret    $ETC/secrets/webhook-secret (for an alert receiver's secret_file)
  DSL console     https://127.0.0.1:8443/ -- set console.listen_host to the management address,
                  then: sudo -u $SERVICE_USER $OPT/venv/bin/schoolgate console user add NAME --role dsl
                  (docs/dsl.md, "The console")
EOF
}

uninstall() {
  local unit path found=0
  for path in "$OPT" "$ETC" "$LIB" "$LOG" "$UNITDIR/schoolgate.service"; do
    [ ! -e "$path" ] || found=1
  done
  if [ "$found" -eq 0 ]; then
    say "schoolgate is not installed${ROOT:+ in $ROOT}: nothing to remove"
    return
  fi
  if [ "$SYSTEM" -eq 1 ]; then
    # A glob names only loaded units: disable each enabled sniffer instance by its own name.
    local wanted
    for wanted in "$UNITDIR"/*.wants/schoolgate-sniffer@*.service; do
      [ -L "$wanted" ] || continue
      systemctl disable --now "$(basename "$wanted")" >/dev/null 2>&1 || true
      rm -f "$wanted"
    done
    systemctl disable --now schoolgate.service schoolgate-resolver.service schoolgate-leases.service \
      schoolgate-fastpath.service schoolgate-console.service schoolgate-nft.service \
      >/dev/null 2>&1 || true
    if command -v nft >/dev/null && nft list tables 2>/dev/null | grep -qx 'table inet schoolgate'; then
      nft delete table inet schoolgate
    fi
  else
    for unit in "${UNITS[@]}"; do
      [ ! -e "$UNITDIR/$unit" ] || systemctl_ disable --quiet "$unit" >/dev/null 2>&1 || true
    done
    rm -f "$UNITDIR"/multi-user.target.wants/schoolgate-sniffer@*.service
    rmdir "$UNITDIR/multi-user.target.wants" 2>/dev/null || true
  fi
  for unit in "${UNITS[@]}"; do rm -f "$UNITDIR/$unit"; done
  [ "$SYSTEM" -eq 0 ] || systemctl daemon-reload
  rm -rf "$OPT"
  if [ "$PURGE" -eq 1 ]; then
    rm -rf "$ETC" "$LIB" "$LOG" "$FASTPATH_STATE"
    if [ "$SYSTEM" -eq 1 ] && id "$SERVICE_USER" >/dev/null 2>&1; then userdel "$SERVICE_USER"; fi
    say "schoolgate removed, with its configuration, data, CA and logs"
  else
    say "schoolgate removed; kept $ETC, $LIB (banks, CA) and $LOG (remove with --uninstall --purge)"
  fi
}

main() {
  if [ "$UNINSTALL" -eq 1 ]; then
    uninstall
    return
  fi
  [ "$SYSTEM" -eq 0 ] || [ "$(id -u)" -eq 0 ] || die "run as root (sudo), or use --root DIR for a dry run"
  check_os
  if [ "$SYSTEM" -eq 1 ]; then
    # tcpdump brings libpcap, which lets the sniffer filter in the kernel (BPF) instead of
    # handing every packet to Python. g++ builds pdqhash, which is published only as source, and
    # netfilterqueue (also source only) links libnetfilter_queue; iptables carries the fast
    # path's queue rule (docs/gateway.md, "The fast path").
    "$SRC/deploy/system-deps.sh" nft:nftables systemctl:systemd tcpdump:tcpdump g++:g++ \
      iptables-nft:iptables \
      /usr/include/libnetfilter_queue/libnetfilter_queue.h:libnetfilter-queue-dev
    # libarchive reads 7z archives and lz4 files; without it they are refused, never passed.
    "$SRC/deploy/system-deps.sh" "/usr/lib/$(uname -m)-linux-gnu/libarchive.so.13:libarchive13" ||
      echo "schoolgate: warning: libarchive13 is not installed, so 7z archives and lz4 files" \
        "cannot be looked into and are refused (apt-get install libarchive13)" >&2
  fi
  ensure_user
  install_venv
  make_dirs
  write_config
  write_secrets
  make_ca
  install_units
  start_services
  next_steps
}

main
