#!/usr/bin/env bash
# endpoint.sh — an endpoint of the lab: a tiny HTTP server that answers with the VM's name, and
# `meshctl register` keeping it in the service in etcd for as long as the server runs.
#
# usage: endpoint.sh [--dry-run] [--name NAME] [--ttl TTL] SERVICE ADDR PORT STORE_URL
#   SERVICE    the service to join (its key PREFIX/services/SERVICE is written by lb.sh)
#   ADDR PORT  where the HTTP server listens: the endpoint the lbs send connections to
#   STORE_URL  etcd://HOST:PORT[,HOST:PORT...]/PREFIX, the store every meshd watches
#   --name     what the server answers (default: the host name), so a client sees who served it
#   --ttl      the registration's lease (default 10s): how long the endpoint stays listed after
#              its host dies or loses etcd
#
# Two units: meshpath-http.service (python3 -m http.server) and meshpath-register.service
# (`meshctl register SERVICE ADDR:PORT --ttl TTL --store STORE_URL`), which is bound to the
# server: `systemctl stop meshpath-http` stops the registration too, and meshctl, on SIGTERM,
# revokes its lease, so the endpoint leaves every lb at once instead of after the ttl.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

WWW=/srv/meshpath-endpoint

usage() { sed -n '/^# usage:/,/^# *--ttl/p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

write_units() {
  local service="$1" addr="$2" port="$3" store="$4" ttl="$5" endpoint
  endpoint="$addr:$port"
  [[ "$addr" == *:* ]] && endpoint="[$addr]:$port"
  write_file /etc/systemd/system/meshpath-http.service 0644 <<EOF
# written by vagrant/provision/endpoint.sh
[Unit]
Description=meshpath lab: HTTP server of endpoint $endpoint
After=network-online.target
Wants=network-online.target

[Service]
ExecStart=/usr/bin/python3 -m http.server $port --bind $addr --directory $WWW
DynamicUser=yes
Restart=always
RestartSec=1s

[Install]
WantedBy=multi-user.target
EOF
  write_file /etc/systemd/system/meshpath-register.service 0644 <<EOF
# written by vagrant/provision/endpoint.sh
[Unit]
Description=meshpath lab: $endpoint registered in service $service (etcd lease, ttl $ttl)
BindsTo=meshpath-http.service
After=meshpath-http.service network-online.target
Wants=network-online.target

[Service]
# On SIGTERM meshctl revokes the lease and the endpoint leaves at once; killed, or cut off from
# etcd, the lease lapses after the ttl. While etcd cannot be reached meshctl keeps trying.
ExecStart=/usr/bin/meshctl register $service $endpoint --ttl $ttl --store $store
Restart=always
RestartSec=2s

[Install]
WantedBy=multi-user.target
EOF
}

main() {
  take_dry_run_flag "$@"
  set -- "${ARGS[@]}"
  local name="" ttl=10s
  local -a pos=()
  while (($#)); do
    case "$1" in
      --name) (($# >= 2)) || usage; name="$2"; shift 2 ;;
      --ttl) (($# >= 2)) || usage; ttl="$2"; shift 2 ;;
      -*) usage ;;
      *) pos+=("$1"); shift ;;
    esac
  done
  ((${#pos[@]} == 4)) || usage
  local service="${pos[0]}" addr="${pos[1]}" port="${pos[2]}" store="${pos[3]}" ifname
  [[ "$service" =~ ^[A-Za-z0-9][A-Za-z0-9_.-]*$ ]] || die "bad service name '$service'"
  check_ipv4 "$addr"
  if ! [[ "$port" =~ ^[0-9]+$ ]] || ((port < 1 || port > 65535)); then die "bad port '$port'"; fi
  [[ "$ttl" =~ ^[0-9]+s$ ]] || die "--ttl must be whole seconds like 10s, got '$ttl'"
  check_store_url "$store"
  [[ -n "$name" ]] || name="$(hostname)"
  require_root

  apt_install python3 ethtool iproute2
  # The lbs' XDP rewrites this endpoint's replies: they must leave with a full checksum
  # (client.sh says why).
  ifname="$(iface_with_addr "$addr")"
  net_unit "full checksums on the endpoint's interface $ifname" "/sbin/ethtool -K $ifname tx off"
  write_file "$WWW/index.html" 0644 <<<"$name"
  write_units "$service" "$addr" "$port" "$store" "$ttl"
  run systemctl daemon-reload
  run systemctl enable meshpath-http.service meshpath-register.service
  run systemctl restart meshpath-http.service meshpath-register.service
  log "$name: http://$addr:$port/ registered in $service at $store (ttl $ttl)"
}

main "$@"
