# shellcheck shell=bash
# lib.sh — what the provisioning scripts share (sourced, not run). Every action a script takes
# goes through one of the functions below, so that in dry-run mode (`--dry-run` anywhere in the
# arguments, or MESHPATH_PROVISION_DRY_RUN=1) the script prints what it would do and changes
# nothing. tests/vagrant/test_provision.py reads that output; its records, one per action:
#
#   @@run <argv, shell-quoted>                      a command
#   @@run-input <argv, shell-quoted>                a command and its standard input, up to @@end
#   @@file <path> <mode>                            a file's whole content, up to @@end
#   @@note <text>                                   something not an action (what a query returned)
#
# Logs go to stderr, so stdout holds only the records.

MESHPATH_PROVISION_DRY_RUN="${MESHPATH_PROVISION_DRY_RUN:-0}"
PROVISION_NAME="$(basename "${BASH_SOURCE[1]:-provision}" .sh)"
# The repository root: the synced folder in a VM (/vagrant-src), the work tree in tests.
MESHPATH_SRC="${MESHPATH_SRC:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
MESHPATH_BUILD_DIR="${MESHPATH_BUILD_DIR:-/opt/meshpath/build}"

log() { echo "[$PROVISION_NAME] $*" >&2; }
die() { echo "[$PROVISION_NAME] error: $*" >&2; exit 2; }
dry_run() { [[ "$MESHPATH_PROVISION_DRY_RUN" == 1 ]]; }

# Sets ARGS to "$@" without --dry-run (which turns dry-run mode on).
ARGS=()
take_dry_run_flag() {
  local a
  ARGS=()
  for a in "$@"; do
    if [[ "$a" == --dry-run ]]; then
      MESHPATH_PROVISION_DRY_RUN=1
    else
      ARGS+=("$a")
    fi
  done
}

require_root() {
  dry_run || [[ $EUID -eq 0 ]] || die "needs root (vagrant runs provisioners as root)"
}

quote_argv() {
  local out
  printf -v out '%q ' "$@"
  echo "${out% }"
}

# run CMD... — run a command (dry run: print it).
run() {
  if dry_run; then
    echo "@@run $(quote_argv "$@")"
    return 0
  fi
  log "+ $(quote_argv "$@")"
  "$@"
}

# run_input TEXT CMD... — run a command with TEXT on its standard input.
run_input() {
  local text="$1"
  shift
  if dry_run; then
    echo "@@run-input $(quote_argv "$@")"
    printf '%s\n' "$text"
    echo "@@end"
    return 0
  fi
  log "+ $(quote_argv "$@") <<< (${#text} bytes)"
  "$@" <<<"$text"
}

# retry TRIES DELAY FUNCTION ARGS... — call until it succeeds, at most TRIES times (dry run:
# once).
retry() {
  local tries="$1" delay="$2" i
  shift 2
  dry_run && { "$@"; return; }
  for ((i = 1; i <= tries; i++)); do
    "$@" && return 0
    log "attempt $i/$tries failed; again in ${delay}s"
    sleep "$delay"
  done
  die "gave up after $tries attempts: $*"
}

# write_file PATH MODE — write standard input to PATH (atomically: a temporary file, then
# rename), creating its directory.
write_file() {
  local path="$1" mode="$2" content
  content="$(cat)"
  if dry_run; then
    echo "@@file $path $mode"
    printf '%s\n' "$content"
    echo "@@end"
    return 0
  fi
  log "writing $path"
  install -d -m 0755 "$(dirname "$path")"
  printf '%s\n' "$content" >"$path.tmp.$$"
  chmod "$mode" "$path.tmp.$$"
  mv -f "$path.tmp.$$" "$path"
}

apt_install() {
  run env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@"
}

# The interface that holds ADDR. In a dry run, where this host has no such address, a
# placeholder that names it.
iface_with_addr() {
  local addr="$1" ifname
  ifname="$(ip -o -4 addr show 2>/dev/null |
    awk -v a="$addr" '{ split($4, p, "/") } p[1] == a { print $2; exit }')"
  if [[ -z "$ifname" ]]; then
    dry_run || die "no interface holds $addr (is the private network up?)"
    ifname="IFACE-OF-$addr"
  fi
  dry_run && echo "@@note interface of $addr: $ifname" >&2
  echo "$ifname"
}

# net_unit DESCRIPTION COMMAND... — a oneshot unit, meshpath-net.service, that runs each COMMAND
# (one string each, absolute paths) at every boot after the network is up, enabled and started
# now. Routes and offload settings made this way outlive a reboot (`vagrant reload`), which
# ifupdown, configured by vagrant for the private networks, knows nothing of.
net_unit() {
  local description="$1" cmd execs=""
  shift
  for cmd in "$@"; do execs+="ExecStart=$cmd"$'\n'; done
  write_file /etc/systemd/system/meshpath-net.service 0644 <<EOF
# written by vagrant/provision/$PROVISION_NAME.sh
[Unit]
Description=meshpath lab: $description
After=network-online.target
Wants=network-online.target

[Service]
Type=oneshot
RemainAfterExit=yes
${execs%$'\n'}

[Install]
WantedBy=multi-user.target
EOF
  run systemctl daemon-reload
  run systemctl enable meshpath-net.service
  run systemctl restart meshpath-net.service
}

# A persistent sysctl file, loaded now. Each argument is KEY=VALUE.
sysctl_file() {
  local path="/etc/sysctl.d/60-meshpath-$PROVISION_NAME.conf" kv lines=""
  for kv in "$@"; do lines+="$kv"$'\n'; done
  write_file "$path" 0644 <<EOF
# written by vagrant/provision/$PROVISION_NAME.sh
${lines%$'\n'}
EOF
  run sysctl -p "$path"
}

# host:port,host:port from etcd://host:port,host:port/prefix
store_endpoints() {
  local rest="${1#etcd://}"
  echo "${rest%%/*}"
}

# /prefix from etcd://host:port,host:port/prefix (/meshpath when none, as meshd's default)
store_prefix() {
  local rest="${1#etcd://}"
  if [[ "$rest" == */* ]]; then echo "/${rest#*/}"; else echo /meshpath; fi
}

check_store_url() {
  [[ "$1" =~ ^etcd://[^/]+(/.*)?$ ]] ||
    die "store URL must be etcd://HOST:PORT[,HOST:PORT...]/PREFIX, got '$1'"
}

check_ipv4() {
  [[ "$1" =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ ]] || die "not an IPv4 address: '$1'"
}
