#!/usr/bin/env bash
# common.sh — the first provisioner of every VM of the lab (vagrant/Vagrantfile).
#
# usage: common.sh [--dry-run] ROLE
#   ROLE: etcd | endpoint | lb | router | client
#
# Every VM: apt-get update. The nodes that run meshpath build it from the synced repository
# ($MESHPATH_SRC, /vagrant-src) into a build directory of the VM's own ($MESHPATH_BUILD_DIR,
# /opt/meshpath/build; never the synced folder, which both lbs share on some providers):
#   lb        the project's own install command: scripts/install-deps.sh, scripts/build.sh, then
#             `cmake --install` (prefix /usr: /usr/sbin/meshd, /usr/bin/meshctl, the unit, ...)
#   endpoint  scripts/install-deps.sh, then meshctl alone (`meshctl register`), to /usr/bin
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() { sed -n '/^# usage:/,/^# *ROLE:/p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

# install-deps.sh brings etcd-server (for the e2e tests), and Debian starts it as a single-member
# cluster on 127.0.0.1:2379. The lab's cluster is etcd1..3; a second, lone etcd on this node
# would only take memory and could be mistaken for it.
stop_packaged_etcd() {
  run systemctl disable --now etcd.service
}

build_lb() {
  run "$MESHPATH_SRC/scripts/install-deps.sh"
  run env MESHPATH_BUILD_DIR="$MESHPATH_BUILD_DIR" "$MESHPATH_SRC/scripts/build.sh" \
    -DCMAKE_INSTALL_PREFIX=/usr
  run cmake --install "$MESHPATH_BUILD_DIR"
  stop_packaged_etcd
}

build_meshctl() {
  run "$MESHPATH_SRC/scripts/install-deps.sh"
  run cmake -S "$MESHPATH_SRC" -B "$MESHPATH_BUILD_DIR" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_INSTALL_PREFIX=/usr
  run cmake --build "$MESHPATH_BUILD_DIR" --target meshctl -j "$(nproc)"
  run install -m 0755 "$MESHPATH_BUILD_DIR/tools/meshctl/meshctl" /usr/bin/meshctl
  stop_packaged_etcd
}

main() {
  take_dry_run_flag "$@"
  set -- "${ARGS[@]}"
  (($# == 1)) || usage
  local role="$1"
  [[ "$role" =~ ^(etcd|endpoint|lb|router|client)$ ]] ||
    die "unknown role '$role' (etcd, endpoint, lb, router, client)"
  require_root

  run env DEBIAN_FRONTEND=noninteractive apt-get update -q
  case "$role" in
    lb) build_lb ;;
    endpoint) build_meshctl ;;
    *) ;;
  esac
  log "done ($role)"
}

main "$@"
