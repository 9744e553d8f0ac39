#!/usr/bin/env bash
# lb.sh — a load balancer node: meshd (built and installed by common.sh) with XDP on the
# interfaces toward the router and the endpoints, its services from etcd (--store).
#
# usage: lb.sh [--dry-run] [OPTIONS] NODE_IP STORE_URL
#   NODE_IP    this node's address toward the endpoints: node.ipv4, the SNAT source
#   STORE_URL  etcd://HOST:PORT[,HOST:PORT...]/PREFIX, the same on every lb
#   --front-ip ADDR        this node's address toward the router (XDP attaches to its interface too)
#   --route NET,GATEWAY    a route to add (repeatable): the clients' network via the router, so
#                          replies translated back to the VIP find their way
#   --service NAME,VIP,PORT,PROTO   the service to create in etcd if it is not there yet (an
#                          etcd transaction: several lbs may race, none overwrites the other's)
#   --xdp-mode native|generic       node.xdp_mode (default generic: works on any NIC a
#                          hypervisor emulates; native needs a driver with XDP, virtio-net has it)
#
# Files: /etc/meshpath/meshd.yaml (the node section; services come from etcd), the unit from
# deploy/systemd/meshd.service with a drop-in adding --store, sysctls (forwarding: XDP's route
# lookup and the kernel's fallback for a missing neighbour both need it).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CONFIG=/etc/meshpath/meshd.yaml
UNIT=/etc/systemd/system/meshd.service
DROP_IN=/etc/systemd/system/meshd.service.d/10-store.conf
MESHD=/usr/sbin/meshd  # where `cmake --install` (prefix /usr) put it

usage() { sed -n '/^# usage:/,/^# *--xdp-mode/p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

write_config() {
  local node_ip="$1" front_ip="$2" xdp_mode="$3" store="$4" front_if back_if interfaces comment
  back_if="$(iface_with_addr "$node_ip")"
  interfaces="$back_if"
  comment="toward the endpoints ($node_ip)"
  if [[ -n "$front_ip" ]]; then
    front_if="$(iface_with_addr "$front_ip")"
    interfaces="$front_if, $back_if"
    comment="toward the router ($front_ip) and the endpoints ($node_ip)"
  fi
  write_file "$CONFIG" 0644 <<EOF
# /etc/meshpath/meshd.yaml — written by vagrant/provision/lb.sh (provisioning rewrites it).
# The node section only: services and endpoints come from etcd, the same for every lb (meshd
# --store, in $DROP_IN). Every field: docs/config.md.
node:
  interfaces: [$interfaces]  # $comment
  ipv4: $node_ip  # the SNAT source toward the endpoints
  xdp_mode: $xdp_mode
EOF
}

install_unit() {
  local store="$1" unit_src="$MESHPATH_SRC/deploy/systemd/meshd.service"
  local sysusers_src="$MESHPATH_SRC/deploy/sysusers/meshpath.conf"
  if [[ -f "$unit_src" ]]; then
    run install -D -m 0644 "$unit_src" "$UNIT"
    if [[ -f "$sysusers_src" ]]; then
      run install -D -m 0644 "$sysusers_src" /etc/sysusers.d/meshpath.conf
      run systemd-sysusers
    fi
  else
    log "no $unit_src: a plain unit instead"
    write_file "$UNIT" 0644 <<EOF
# written by vagrant/provision/lb.sh (this tree has no deploy/systemd/meshd.service)
[Unit]
Description=meshpath XDP L4 load balancer (meshd)
After=network-online.target
Wants=network-online.target

[Service]
ExecStart=$MESHD --config $CONFIG
Restart=on-failure
RestartSec=1s
KillMode=mixed

[Install]
WantedBy=multi-user.target
EOF
  fi
  write_file "$DROP_IN" 0644 <<EOF
# written by vagrant/provision/lb.sh: services from the lab's etcd cluster
[Service]
ExecStart=
ExecStart=$MESHD --config $CONFIG --store $store
EOF
}

# Creates PREFIX/services/NAME unless it exists (docs/etcd.md: JSON like the API's service
# object, without name and endpoints). etcd may still be forming its quorum: retried.
seed_service() {
  local store="$1" spec="$2" name vip port proto key value txn
  IFS=, read -r name vip port proto <<<"$spec"
  key="$(store_prefix "$store")/services/$name"
  value="{\"vip\":\"$vip\",\"port\":$port,\"protocol\":\"$proto\"}"
  # etcdctl txn's input: compares, a blank line, the operations on success, a blank line, those
  # on failure (none), a blank line. The value is double-quoted with its quotes escaped, the way
  # etcdctl reads an argument there. An existing key is a FAILURE of the compare, exit 0.
  txn="$(printf 'create("%s") = "0"\n\nput %s "%s"' "$key" "$key" "${value//\"/\\\"}")"$'\n\n'
  # timeout: etcdctl's txn has no deadline of its own (--command-timeout does not apply to it).
  retry 60 5 run_input "$txn" timeout 20 env ETCDCTL_API=3 etcdctl \
    --endpoints="$(store_endpoints "$store")" --dial-timeout=3s txn
}

main() {
  take_dry_run_flag "$@"
  set -- "${ARGS[@]}"
  local front_ip="" xdp_mode=generic route
  local -a routes=() services=() pos=()
  while (($#)); do
    case "$1" in
      --front-ip) (($# >= 2)) || usage; front_ip="$2"; shift 2 ;;
      --route) (($# >= 2)) || usage; routes+=("$2"); shift 2 ;;
      --service) (($# >= 2)) || usage; services+=("$2"); shift 2 ;;
      --xdp-mode) (($# >= 2)) || usage; xdp_mode="$2"; shift 2 ;;
      -*) usage ;;
      *) pos+=("$1"); shift ;;
    esac
  done
  ((${#pos[@]} == 2)) || usage
  local node_ip="${pos[0]}" store="${pos[1]}" spec
  check_ipv4 "$node_ip"
  [[ -z "$front_ip" ]] || check_ipv4 "$front_ip"
  check_store_url "$store"
  [[ "$xdp_mode" =~ ^(native|generic)$ ]] || die "--xdp-mode must be native or generic"
  for spec in "${services[@]}"; do
    [[ "$spec" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*,[0-9.]+,[0-9]+,(tcp|udp)$ ]] ||
      die "--service must be NAME,VIP,PORT,tcp|udp, got '$spec'"
  done
  local -a route_cmds=()
  for route in "${routes[@]}"; do
    [[ "$route" =~ ^([0-9./]+),([0-9.]+)$ ]] || die "--route must be NET,GATEWAY, got '$route'"
    route_cmds+=("/sbin/ip route replace ${BASH_REMATCH[1]} via ${BASH_REMATCH[2]}")
  done
  require_root

  sysctl_file net.ipv4.ip_forward=1
  ((${#route_cmds[@]} == 0)) || net_unit "routes of the load balancer" "${route_cmds[@]}"
  write_config "$node_ip" "$front_ip" "$xdp_mode" "$store"
  install_unit "$store"
  # meshd's own validation (interfaces exist, node.ipv4 is local, the groups sysusers made).
  run "$MESHD" --check-config "$CONFIG"
  run systemctl daemon-reload
  run systemctl enable meshd.service
  run systemctl restart meshd.service
  for spec in "${services[@]}"; do seed_service "$store" "$spec"; done
  log "meshd on $node_ip, services from $store"
}

main "$@"
