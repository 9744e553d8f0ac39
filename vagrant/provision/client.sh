#!/usr/bin/env bash
# client.sh — the client: curl and wrk, and a route to the VIP via the router.
#
# usage: client.sh [--dry-run] CLIENT_ADDR VIP ROUTER_ADDR
#   CLIENT_ADDR  this VM's address on the client network (finds the interface)
#   VIP          the service address (routed as VIP/32)
#   ROUTER_ADDR  the router's address on the client network
#
# Transmit checksum offload is turned off on the lab interface: with it, a VM may send TCP with
# a partial checksum that the host completes only at a real NIC, and a packet the lbs' XDP
# rewrites on the way is then dropped by the endpoint (DESIGN.md, the veth lab's same fact).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() { sed -n '/^# usage:/,/^# *ROUTER_ADDR/p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

main() {
  take_dry_run_flag "$@"
  set -- "${ARGS[@]}"
  (($# == 3)) || usage
  local addr="$1" vip="$2" router="$3" ifname
  check_ipv4 "$addr"
  check_ipv4 "$vip"
  check_ipv4 "$router"
  require_root

  apt_install curl wrk ethtool iproute2
  ifname="$(iface_with_addr "$addr")"
  net_unit "route to the VIP $vip via the router $router" \
    "/sbin/ip route replace $vip/32 via $router dev $ifname" \
    "/sbin/ethtool -K $ifname tx off"
  log "VIP $vip/32 via $router on $ifname"
}

main "$@"
