#!/usr/bin/env bash
# etcd.sh — one member of the lab's etcd cluster: Debian's etcd-server, its unit given this
# member's name, addresses and the whole cluster by a drop-in.
#
# usage: etcd.sh [--dry-run] NAME CLUSTER [CLIENT_PORT]
#   NAME      this member, one of CLUSTER's names (etcd1)
#   CLUSTER   every member as NAME=PEER_URL, comma-separated (etcd's --initial-cluster):
#             etcd1=http://10.10.4.31:2380,etcd2=http://10.10.4.32:2380,etcd3=http://10.10.4.33:2380
#   CLIENT_PORT  where clients (meshd, meshctl, etcdctl) connect; default 2379
#
# The member listens for clients on its peer URL's address and on 127.0.0.1 (etcdctl on the VM).
# Data in /var/lib/etcd/meshpath-lab, not the package's /var/lib/etcd/default: that one already
# holds the lone cluster Debian started at install, and etcd ignores --initial-cluster once its
# data directory has a member in it.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

DATA_DIR=/var/lib/etcd/meshpath-lab
DROP_IN=/etc/systemd/system/etcd.service.d/meshpath-lab.conf

usage() { sed -n '/^# usage:/,/^# *CLIENT_PORT/p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

# The peer URL of member NAME in CLUSTER.
peer_url_of() {
  local name="$1" cluster="$2" member
  local -a members
  IFS=, read -r -a members <<<"$cluster"
  for member in "${members[@]}"; do
    if [[ "${member%%=*}" == "$name" ]]; then
      echo "${member#*=}"
      return 0
    fi
  done
  return 1
}

write_drop_in() {
  local name="$1" cluster="$2" peer_url="$3" client_url="$4"
  write_file "$DROP_IN" 0644 <<EOF
# written by vagrant/provision/etcd.sh: member $name of the meshpath lab's etcd cluster
[Service]
# The package's unit sets ETCD_NAME and ETCD_DATA_DIR; etcd refuses to start when a flag
# shadows an ETCD_* variable ("conflicting environment variable"), so they go.
UnsetEnvironment=ETCD_NAME ETCD_DATA_DIR
ExecStart=
ExecStart=/usr/bin/etcd --name $name --data-dir $DATA_DIR \\
  --listen-peer-urls $peer_url --initial-advertise-peer-urls $peer_url \\
  --listen-client-urls $client_url,http://127.0.0.1:${client_url##*:} \\
  --advertise-client-urls $client_url \\
  --initial-cluster $cluster \\
  --initial-cluster-state new --initial-cluster-token meshpath-lab
EOF
}

main() {
  take_dry_run_flag "$@"
  set -- "${ARGS[@]}"
  (($# == 2 || $# == 3)) || usage
  local name="$1" cluster="$2" client_port="${3:-2379}" peer_url host
  [[ "$name" =~ ^[a-z0-9][a-z0-9-]*$ ]] || die "bad member name '$name'"
  peer_url="$(peer_url_of "$name" "$cluster")" || die "$name is not in the cluster '$cluster'"
  [[ "$peer_url" =~ ^http://([0-9.]+):[0-9]+$ ]] ||
    die "peer URL of $name must be http://IPV4:PORT, got '$peer_url'"
  host="${BASH_REMATCH[1]}"
  check_ipv4 "$host"
  [[ "$client_port" =~ ^[0-9]+$ ]] || die "bad client port '$client_port'"
  require_root

  apt_install etcd-server etcd-client
  run systemctl stop etcd.service
  run install -d -o etcd -g etcd -m 0700 "$DATA_DIR"
  write_drop_in "$name" "$cluster" "$peer_url" "http://$host:$client_port"
  run systemctl daemon-reload
  run systemctl enable etcd.service
  # --no-block: etcd tells systemd it is ready (Type=notify) only once the cluster has a
  # quorum, which the first member provisioned waits for until a second one is up. Blocking
  # here would hang a `vagrant up` that provisions the VMs one after another.
  run systemctl restart --no-block etcd.service
  log "member $name: peers $peer_url, clients http://$host:$client_port (cluster $cluster)"
}

main "$@"
