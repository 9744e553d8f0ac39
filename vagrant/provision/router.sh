#!/usr/bin/env bash
# router.sh — the router between the client and the load balancers: it forwards, and spreads
# the flows to the VIP over every lb with ECMP, hashing on the 5-tuple (L4), so each connection
# stays on one lb while different connections go to different ones. Every meshd builds the same
# Maglev ring from the same endpoints in etcd, so whichever lb a flow lands on picks the same
# endpoint.
#
# usage: router.sh [--dry-run] VIP LB_ADDR LB_ADDR...
#   VIP       the service address (routed as VIP/32)
#   LB_ADDR   each load balancer's address on the router's network (the ECMP next hops)
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() { sed -n '/^# usage:/,/^# *LB_ADDR/p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

main() {
  take_dry_run_flag "$@"
  set -- "${ARGS[@]}"
  (($# >= 3)) || usage
  local vip="$1" lb route
  shift
  check_ipv4 "$vip"
  for lb in "$@"; do check_ipv4 "$lb"; done
  require_root

  apt_install iproute2 tcpdump
  # fib_multipath_hash_policy=1: the ECMP hash takes the L4 5-tuple, not only the addresses
  # (policy 0), so one client's connections spread over both lbs.
  # fib_multipath_use_neigh=1: a next hop whose neighbour entry failed (a halted lb no longer
  # answers ARP) is skipped, so its flows move to the other lb.
  sysctl_file net.ipv4.ip_forward=1 net.ipv4.fib_multipath_hash_policy=1 \
    net.ipv4.fib_multipath_use_neigh=1
  route="/sbin/ip route replace $vip/32"
  for lb in "$@"; do route+=" nexthop via $lb"; done
  net_unit "ECMP route to the VIP $vip over the load balancers" "$route"
  log "VIP $vip/32 via $* (ECMP, L4 hash)"
}

main "$@"
