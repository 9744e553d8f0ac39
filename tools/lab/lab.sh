#!/usr/bin/env bash
# lab.sh — the one network-namespace topology shared by the demo, the e2e tests and benchmarks.
#
#   <p>-client   c-lb  10.100.1.2/24  fd00:100:1::2/64   (default route via the lb)
#        |
#   <p>-lb       veth-c 10.100.1.1/24  fd00:100:1::1/64   (client-facing, XDP attaches here)
#                veth-e 10.100.2.1/24  fd00:100:2::1/64   (endpoint-facing, XDP attaches here)
#        |
#   <p>-net      br0 joining p-lb and p-ep1..N            (a plain L2 switch, no addresses)
#        |
#   <p>-epI      eth0  10.100.2.(10+I)/24  fd00:100:2::(10+I)/64   (default route via the lb)
#
# VIPs live in 10.100.0.0/24 and fd00:100::/64 (10.100.0.100, fd00:100::100); the client routes
# everything via the lb. Per-lab files (env, meshd config, socket, logs, pids) sit in
# /run/meshpath-lab/<p>/ and meshd's pinned maps in /sys/fs/bpf/meshpath-<p>; `down` removes both.
#
# Spoofed sources: 10.100.64.0/18 belongs to nobody. The lb routes it to the client, whose kernel
# (no forwarding) drops what comes back, so pktgen can send from it (SYN floods, many UDP flows)
# and the answers go nowhere, as a spoofed source's would.
#
# Options of `up` for the scale tests (each off by default; the env lists what was chosen):
#   --client-addrs N   N more client addresses on c-lb, 10.100.1.3 .. 10.100.1.(2+N) (N <= 50):
#                      more source addresses for tens of thousands of connections to one VIP:port
#   --snat-pool N      N more lb addresses on veth-e, 10.100.2.2 .. 10.100.2.(1+N) (N <= 8); the
#                      endpoints reach them on the link (ARP), and meshd-config lists them as
#                      node.snat_pool
#   --scale            limits for tens of thousands of connections: the client's ephemeral
#                      range 1024-65535, the endpoints' somaxconn and tcp_max_syn_backlog 65535
#
# usage: lab.sh up [--prefix P] [--endpoints N] [--client-addrs N] [--snat-pool N] [--scale]
#        lab.sh down [--prefix P]
#        lab.sh env [--prefix P] [--json]
#        lab.sh http-servers [--prefix P] [--port PORT] [--async]
#                                    (one HTTP server per endpoint; --async: epserver.py --async,
#                                     one asyncio loop for tens of thousands of connections)
#        lab.sh exec [--prefix P] NODE CMD...              (NODE: client | lb | net | epI)
#        lab.sh meshd-config [--prefix P]                  (print the node section of a meshd config)
#        lab.sh meshd-start [--prefix P] MESHD CONFIG [ARGS...]   (meshd in the lb namespace)
#        lab.sh meshd-stop [--prefix P] [--kill]           (SIGTERM, or SIGKILL with --kill)
#        lab.sh chain up|down|env [--prefix P] [--endpoints N]  (benchmarks: gen -> router -> sink)
set -Eeuo pipefail

LAB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PREFIX="${MESHPATH_LAB_PREFIX:-mp}"
ENDPOINTS=3
PORT=8080
JSON=0
KILL=0
MAX_ENDPOINTS=50
CLIENT_ADDRS=0
MAX_CLIENT_ADDRS=50
SNAT_POOL=0
MAX_SNAT_POOL=8
SCALE=0
ASYNC=0
SPOOF_NET4=10.100.64.0/18

die() { echo "lab.sh: $*" >&2; exit 2; }
usage() { sed -n '/^# usage:/,/^set -E/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }

state_dir() { echo "/run/meshpath-lab/$PREFIX"; }
pin_root() { echo "/sys/fs/bpf/meshpath-$PREFIX"; }
ep_ns() { echo "$PREFIX-ep$1"; }
# A process that runs: not gone, and not a zombie (kill -0 succeeds on one, and a container's
# PID 1 may take its time reaping the killed servers and daemons it inherits).
alive() { kill -0 "$1" 2>/dev/null && [[ "$(ps -o stat= -p "$1" 2>/dev/null)" != Z* ]]; }
ep_v4() { echo "10.100.2.$((10 + $1))"; }
ep_v6() { echo "fd00:100:2::$((10 + $1))"; }
client_extra_v4() { echo "10.100.1.$((2 + $1))"; }
snat_pool_v4() { echo "10.100.2.$((1 + $1))"; }
mac_of() { ip -n "$1" -o link show "$2" | sed -n 's/.*link\/ether \([0-9a-f:]*\).*/\1/p'; }

# All namespaces of this lab, whatever the endpoint count it was brought up with.
lab_namespaces() {
  ip netns list | awk '{print $1}' | grep -E "^${PREFIX}-(client|lb[0-9]*|net|ep[0-9]+)\$" || true
}

in_ns() { local ns="$1"; shift; ip netns exec "$ns" "$@"; }

# Addresses without duplicate address detection, so they are usable at once.
addr6() { ip -n "$1" -6 addr add "$2" dev "$3" nodad; }

sysctl_ns() { in_ns "$1" sysctl -qw "$2"; }

check_tools() {
  local t
  for t in ip ethtool; do
    command -v "$t" >/dev/null || die "$t not found (apt-get install -y iproute2 ethtool)"
  done
  [[ $EUID -eq 0 ]] || die "needs root (network namespaces)"
}

cmd_up() {
  check_tools
  if ! [[ "$ENDPOINTS" =~ ^[0-9]+$ ]] || (( ENDPOINTS < 1 || ENDPOINTS > MAX_ENDPOINTS )); then
    die "--endpoints must be 1..$MAX_ENDPOINTS, got '$ENDPOINTS'"
  fi
  [[ "$PREFIX" =~ ^[a-z0-9][a-z0-9-]{0,11}$ ]] ||
    die "--prefix must match [a-z0-9][a-z0-9-]{0,11}, got '$PREFIX'"
  [[ -z "$(lab_namespaces)" ]] || die "lab '$PREFIX' is already up (lab.sh down --prefix $PREFIX)"
  if ! [[ "$CLIENT_ADDRS" =~ ^[0-9]+$ ]] || (( CLIENT_ADDRS > MAX_CLIENT_ADDRS )); then
    die "--client-addrs must be 0..$MAX_CLIENT_ADDRS, got '$CLIENT_ADDRS'"
  fi
  if ! [[ "$SNAT_POOL" =~ ^[0-9]+$ ]] || (( SNAT_POOL > MAX_SNAT_POOL )); then
    die "--snat-pool must be 0..$MAX_SNAT_POOL, got '$SNAT_POOL'"
  fi

  # Half-built labs are taken down again; a later `up` then starts clean.
  trap 'echo "lab.sh: up failed, taking lab $PREFIX down" >&2; cmd_down >/dev/null 2>&1 || true' ERR

  local client="$PREFIX-client" lb="$PREFIX-lb" net="$PREFIX-net" i ns
  for ns in "$client" "$lb" "$net"; do ip netns add "$ns"; done
  for ((i = 1; i <= ENDPOINTS; i++)); do ip netns add "$(ep_ns "$i")"; done
  for ns in $(lab_namespaces); do
    ip -n "$ns" link set lo up
    sysctl_ns "$ns" net.ipv6.conf.all.accept_dad=0
    sysctl_ns "$ns" net.ipv6.conf.default.accept_dad=0
  done

  # client <-> lb, one queue per CPU on each side, as a NIC's RSS queues: a flood sent from one
  # CPU fills that CPU's ring and not the one the real clients' packets take (with a single
  # queue, a veth drops whatever does not fit its one 256-frame ring, flood and clients alike).
  # The endpoints' link keeps one queue, as it had when e2e_passive_udp_icmp lost a 4th datagram
  # now and then; that was an answered flow whose source port the client reused by chance,
  # which stayed on the dead endpoint (fixed in the datapath: UDP flows leave a down endpoint).
  local q
  q="$(nproc)"
  ip -n "$client" link add c-lb numtxqueues "$q" numrxqueues "$q" type veth \
    peer name veth-c numtxqueues "$q" numrxqueues "$q" netns "$lb"
  ip -n "$client" addr add 10.100.1.2/24 dev c-lb
  addr6 "$client" fd00:100:1::2/64 c-lb
  ip -n "$lb" addr add 10.100.1.1/24 dev veth-c
  addr6 "$lb" fd00:100:1::1/64 veth-c

  # lb <-> switch
  ip -n "$net" link add br0 type bridge
  ip -n "$net" link set br0 type bridge stp_state 0 forward_delay 0
  sysctl_ns "$net" net.ipv6.conf.all.disable_ipv6=1
  ip -n "$lb" link add veth-e type veth peer name p-lb netns "$net"
  ip -n "$lb" addr add 10.100.2.1/24 dev veth-e
  addr6 "$lb" fd00:100:2::1/64 veth-e
  ip -n "$net" link set p-lb master br0

  # Scale options: more client source addresses, more lb (SNAT pool) addresses.
  for ((i = 1; i <= CLIENT_ADDRS; i++)); do
    ip -n "$client" addr add "$(client_extra_v4 "$i")/24" dev c-lb
  done
  for ((i = 1; i <= SNAT_POOL; i++)); do
    ip -n "$lb" addr add "$(snat_pool_v4 "$i")/24" dev veth-e
  done

  # switch <-> endpoints
  for ((i = 1; i <= ENDPOINTS; i++)); do
    ns="$(ep_ns "$i")"
    ip -n "$ns" link add eth0 type veth peer name "p-ep$i" netns "$net"
    ip -n "$net" link set "p-ep$i" master br0
    ip -n "$ns" addr add "$(ep_v4 "$i")/24" dev eth0
    addr6 "$ns" "$(ep_v6 "$i")/64" eth0
  done

  ip -n "$net" link set br0 up
  for ns in $(lab_namespaces); do
    for dev in $(ip -n "$ns" -o link show | awk -F': ' '{print $2}' | cut -d@ -f1); do
      ip -n "$ns" link set "$dev" up
    done
  done

  # Routing: client and endpoints go through the lb for everything.
  ip -n "$client" route add default via 10.100.1.1
  ip -n "$client" -6 route add default via fd00:100:1::1
  for ((i = 1; i <= ENDPOINTS; i++)); do
    ns="$(ep_ns "$i")"
    ip -n "$ns" route add default via 10.100.2.1
    ip -n "$ns" -6 route add default via fd00:100:2::1
  done
  ip -n "$lb" route add "$SPOOF_NET4" via 10.100.1.2
  sysctl_ns "$lb" net.ipv4.ip_forward=1
  sysctl_ns "$lb" net.ipv6.conf.all.forwarding=1
  if (( SCALE )); then
    sysctl_ns "$client" "net.ipv4.ip_local_port_range=1024 65535"
    for ((i = 1; i <= ENDPOINTS; i++)); do
      sysctl_ns "$(ep_ns "$i")" net.core.somaxconn=65535
      sysctl_ns "$(ep_ns "$i")" net.ipv4.tcp_max_syn_backlog=65535
    done
  fi
  # meshd's SNAT ports (61000-65535) stay out of the lb's own ephemeral range.
  sysctl_ns "$lb" "net.ipv4.ip_local_port_range=32768 60999"

  # Quirks of XDP on veth (see DESIGN.md, "This machine"):
  # - senders must not leave TCP checksums partial: XDP forwards them unfinished and the receiver
  #   drops them (TcpInCsumErrors);
  for ((i = 1; i <= ENDPOINTS; i++)); do
    in_ns "$(ep_ns "$i")" ethtool -K eth0 tx off >/dev/null
  done
  in_ns "$client" ethtool -K c-lb tx off >/dev/null
  # - frames XDP_REDIRECTed into a veth reach the peer only if the peer has XDP or GRO on.
  in_ns "$client" ethtool -K c-lb gro on >/dev/null
  in_ns "$net" ethtool -K p-lb gro on >/dev/null

  # Per-lab files; bpffs for meshd's pins.
  mkdir -p "$(state_dir)"
  if ! mountpoint -q /sys/fs/bpf; then mount -t bpf bpf /sys/fs/bpf; fi
  write_env > "$(state_dir)/lab.env"
  trap - ERR
  echo "lab $PREFIX up: client, lb, $ENDPOINTS endpoints (lab.sh env --prefix $PREFIX)"
}

# Kills every process inside the given namespaces (servers, meshd, clients, routers), then
# removes them. Best effort: a namespace already gone is what we wanted.
remove_namespaces() {
  local ns pids
  for ns in "$@"; do
    pids="$(ip netns pids "$ns" 2>/dev/null || true)"
    if [[ -n "$pids" ]]; then
      # shellcheck disable=SC2086
      kill -9 $pids 2>/dev/null || true
    fi
  done
  for ns in "$@"; do ip netns del "$ns" 2>/dev/null || true; done
}

# Stop every process inside the lab's namespaces (servers, meshd, clients), then remove them.
cmd_down() {
  remove_namespaces $(lab_namespaces)
  rm -rf "$(state_dir)"
  if [[ -d "$(pin_root)" ]]; then rm -rf "$(pin_root)"; fi
  echo "lab $PREFIX down"
}

# Shell assignments describing the lab (also saved as <state>/lab.env by `up`).
write_env() {
  local i v4s="" v6s="" nss="" extra="" pool=""
  for ((i = 1; i <= ENDPOINTS; i++)); do
    v4s+="${v4s:+ }$(ep_v4 "$i")"
    v6s+="${v6s:+ }$(ep_v6 "$i")"
    nss+="${nss:+ }$(ep_ns "$i")"
  done
  for ((i = 1; i <= CLIENT_ADDRS; i++)); do extra+="${extra:+ }$(client_extra_v4 "$i")"; done
  for ((i = 1; i <= SNAT_POOL; i++)); do pool+="${pool:+ }$(snat_pool_v4 "$i")"; done
  cat <<ENV
LAB_PREFIX=$PREFIX
LAB_ENDPOINTS=$ENDPOINTS
LAB_NS_CLIENT=$PREFIX-client
LAB_NS_LB=$PREFIX-lb
LAB_NS_NET=$PREFIX-net
LAB_NS_ENDPOINTS="$nss"
LAB_CLIENT_IPV4=10.100.1.2
LAB_CLIENT_IPV6=fd00:100:1::2
LAB_CLIENT_EXTRA_IPV4="$extra"
LAB_CLIENT_IFACE=c-lb
LAB_CLIENT_MAC=$(mac_of "$PREFIX-client" c-lb)
LAB_LB_IFACES="veth-c veth-e"
LAB_LB_CLIENT_MAC=$(mac_of "$PREFIX-lb" veth-c)
LAB_LB_SNAT_POOL="$pool"
LAB_SPOOF_NET4=$SPOOF_NET4
LAB_SCALE=$SCALE
LAB_LB_CLIENT_IPV4=10.100.1.1
LAB_LB_CLIENT_IPV6=fd00:100:1::1
LAB_LB_IPV4=10.100.2.1
LAB_LB_IPV6=fd00:100:2::1
LAB_VIP4=10.100.0.100
LAB_VIP6=fd00:100::100
LAB_EP_IPV4="$v4s"
LAB_EP_IPV6="$v6s"
LAB_HTTP_PORT=$PORT
LAB_STATE_DIR=$(state_dir)
LAB_PIN_ROOT=$(pin_root)
ENV
}

load_env() {
  local f
  f="$(state_dir)/lab.env"
  [[ -f "$f" ]] || die "lab '$PREFIX' is not up (lab.sh up --prefix $PREFIX)"
  # shellcheck disable=SC1090
  source "$f"
}

# "a b c" -> "a", "b", "c"
json_list() {
  local out="" x
  for x in $1; do out+="${out:+, }\"$x\""; done
  printf '%s' "$out"
}

cmd_env() {
  load_env
  if (( JSON == 0 )); then
    cat "$(state_dir)/lab.env"
    return
  fi
  local i first=1
  # Scale options: absent from the env of a lab brought up before they existed.
  local extra="${LAB_CLIENT_EXTRA_IPV4:-}" pool="${LAB_LB_SNAT_POOL:-}"
  printf '{"prefix": "%s", "state_dir": "%s", "pin_root": "%s",\n' \
    "$LAB_PREFIX" "$LAB_STATE_DIR" "$LAB_PIN_ROOT"
  printf ' "client": {"ns": "%s", "ipv4": "%s", "ipv6": "%s", "iface": "%s", "mac": "%s",' \
    "$LAB_NS_CLIENT" "$LAB_CLIENT_IPV4" "$LAB_CLIENT_IPV6" "${LAB_CLIENT_IFACE:-c-lb}" \
    "${LAB_CLIENT_MAC:-}"
  printf ' "extra_ipv4": [%s]},\n' "$(json_list "$extra")"
  printf ' "lb": {"ns": "%s", "interfaces": ["veth-c", "veth-e"], "ipv4": "%s", "ipv6": "%s",' \
    "$LAB_NS_LB" "$LAB_LB_IPV4" "$LAB_LB_IPV6"
  printf ' "client_ipv4": "%s", "client_ipv6": "%s", "client_mac": "%s", "snat_pool": [%s]},\n' \
    "$LAB_LB_CLIENT_IPV4" "$LAB_LB_CLIENT_IPV6" "${LAB_LB_CLIENT_MAC:-}" "$(json_list "$pool")"
  printf ' "spoof_net4": "%s", "scale": %s,\n' "${LAB_SPOOF_NET4:-}" "${LAB_SCALE:-0}"
  printf ' "vip4": "%s", "vip6": "%s", "http_port": %s,\n "endpoints": [' \
    "$LAB_VIP4" "$LAB_VIP6" "$LAB_HTTP_PORT"
  for ((i = 1; i <= LAB_ENDPOINTS; i++)); do
    (( first )) || printf ','
    first=0
    printf '\n  {"name": "ep%d", "ns": "%s", "ipv4": "%s", "ipv6": "%s"}' \
      "$i" "$(ep_ns "$i")" "$(ep_v4 "$i")" "$(ep_v6 "$i")"
  done
  printf '\n]}\n'
}

# One HTTP/1.1 server per endpoint namespace, on [::]:PORT (IPv4 and IPv6), answering with the
# endpoint's name (--async: epserver.py --async, for tens of thousands of connections). Logs and
# pids go to the lab's state dir; `down` stops them with the namespaces.
cmd_http_servers() {
  load_env
  local i ns log mode=()
  if (( ASYNC )); then mode=(--async); fi
  for ((i = 1; i <= LAB_ENDPOINTS; i++)); do
    ns="$(ep_ns "$i")"
    log="$LAB_STATE_DIR/http-ep$i.log"
    if [[ -f "$LAB_STATE_DIR/http-ep$i.pid" ]] &&
       alive "$(cat "$LAB_STATE_DIR/http-ep$i.pid")"; then
      continue
    fi
    ip netns exec "$ns" setsid /usr/bin/python3 "$LAB_DIR/epserver.py" --name "ep$i" --port "$PORT" \
      "${mode[@]}" </dev/null >"$log" 2>&1 &
    echo $! > "$LAB_STATE_DIR/http-ep$i.pid"
  done
  # Ready when every server answers over IPv4 and IPv6 (plain routing from the lb namespace).
  local deadline=$((SECONDS + 10))
  for ((i = 1; i <= LAB_ENDPOINTS; i++)); do
    until in_ns "$LAB_NS_LB" /usr/bin/python3 "$LAB_DIR/epserver.py" --probe "$(ep_v4 "$i")" \
            --port "$PORT" >/dev/null 2>&1 &&
          in_ns "$LAB_NS_LB" /usr/bin/python3 "$LAB_DIR/epserver.py" --probe "$(ep_v6 "$i")" \
            --port "$PORT" >/dev/null 2>&1; do
      (( SECONDS < deadline )) || die "HTTP server in $(ep_ns "$i") did not come up (see $LAB_STATE_DIR/http-ep$i.log)"
      sleep 0.1
    done
  done
  echo "HTTP servers up on port $PORT in $LAB_ENDPOINTS endpoints"
}

cmd_exec() {
  load_env
  (( $# >= 2 )) || die "usage: lab.sh exec NODE CMD..."
  local node="$1"; shift
  case "$node" in
    client|lb|net) exec ip netns exec "$PREFIX-$node" "$@" ;;
    ep[0-9]*) exec ip netns exec "$PREFIX-$node" "$@" ;;
    *) die "unknown node '$node' (client | lb | net | epI)" ;;
  esac
}

# The node section of a meshd config for this lab; callers append their `services:`.
cmd_meshd_config() {
  load_env
  cat <<YAML
node:
  interfaces: [veth-c, veth-e]
  ipv4: $LAB_LB_IPV4
  ipv6: $LAB_LB_IPV6
  xdp_mode: native
  api_socket: $LAB_STATE_DIR/meshd.sock
  pin_root: $LAB_PIN_ROOT
  state_file: $LAB_STATE_DIR/state.json
YAML
  if [[ -n "${LAB_LB_SNAT_POOL:-}" ]]; then
    echo "  snat_pool: [$(json_list "$LAB_LB_SNAT_POOL")]"
  fi
}

# meshd runs in the lb's network namespace (and the host's mount namespace); its log is <state>/meshd.log, its pid <state>/meshd.pid.
# Returns once the API socket accepts connections (or fails with the log's tail).
cmd_meshd_start() {
  load_env
  (( $# >= 2 )) || die "usage: lab.sh meshd-start MESHD CONFIG [ARGS...]"
  local meshd="$1" config="$2"; shift 2
  [[ -x "$meshd" ]] || die "meshd binary '$meshd' not found or not executable (scripts/build.sh)"
  [[ -f "$config" ]] || die "config '$config' not found"
  local pidfile="$LAB_STATE_DIR/meshd.pid" log="$LAB_STATE_DIR/meshd.log"
  local sock="$LAB_STATE_DIR/meshd.sock"
  if [[ -f "$pidfile" ]] && alive "$(cat "$pidfile")"; then
    die "meshd already runs in lab $PREFIX (pid $(cat "$pidfile"))"
  fi
  echo "--- meshd start $(date +%T.%N) ---" >>"$log"
  # Not `ip netns exec`: that gives meshd a mount namespace of its own (with a fresh /sys), and its
  # pins under /sys/fs/bpf would vanish with it. meshd --netns joins only the network namespace.
  setsid "$meshd" --netns "$LAB_NS_LB" --config "$config" "$@" </dev/null >>"$log" 2>&1 &
  local pid=$!
  echo "$pid" >"$pidfile"
  local deadline=$((SECONDS + 20))
  until /usr/bin/python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])' \
          "$sock" 2>/dev/null; do
    if ! alive "$pid"; then
      tail -n 30 "$log" >&2
      die "meshd exited during start (log: $log)"
    fi
    if (( SECONDS >= deadline )); then
      tail -n 30 "$log" >&2
      die "meshd did not open $sock within 20 s (log: $log)"
    fi
    sleep 0.1
  done
  echo "meshd up in $LAB_NS_LB (pid $pid, socket $sock, log $log)"
}

cmd_meshd_stop() {
  load_env
  local pidfile="$LAB_STATE_DIR/meshd.pid" pid
  [[ -f "$pidfile" ]] || return 0
  pid="$(cat "$pidfile")"
  if (( KILL )); then
    kill -9 "$pid" 2>/dev/null || true
  else
    kill -TERM "$pid" 2>/dev/null || true
    local i
    for ((i = 0; i < 50; i++)); do alive "$pid" || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  # Reaped by init once gone; wait until it is, so a restart never races the old process.
  while alive "$pid"; do
    sleep 0.05
  done
  rm -f "$pidfile"
}

# --- chain: the benchmarks' three namespaces, separate from the lab above -----------------------
#
#   <p>-gen    eth0  10.101.1.2/24 fd00:101:1::2/64   pktgen sends from here (sources 10.102.0.0/16,
#        |                                             fd00:102::/64, routed back to it by the router)
#   <p>-rtr    gen0  10.101.1.1/24 fd00:101:1::1/64   the device under test: nftables, the trivial
#              sink0 10.101.2.1/24 fd00:101:2::1/64   forwarder or meshd (XDP on gen0 and sink0)
#        |
#   <p>-sink   eth0  10.101.2.2/24 fd00:101:2::2/64   pktgen sink; endpoints 10.101.2.(10+I) and
#                                                      fd00:101:2::(10+I) are addresses of eth0
#
# VIPs 10.101.0.100 and fd00:101::100. MACs are fixed and every neighbour is permanent, so no
# packet waits for ARP/ND. Each veth has one queue per CPU (pktgen may send from every CPU).
CHAIN_MAC_GEN=02:00:00:65:01:02
CHAIN_MAC_RTR_GEN=02:00:00:65:01:01
CHAIN_MAC_RTR_SINK=02:00:00:65:02:01
CHAIN_MAC_SINK=02:00:00:65:02:02
CHAIN_MAX_ENDPOINTS=200

chain_namespaces() {
  ip netns list | awk '{print $1}' | grep -E "^${PREFIX}-(gen|rtr|sink)\$" || true
}

chain_env() {
  local i v4s="" v6s=""
  for ((i = 1; i <= ENDPOINTS; i++)); do
    v4s+="${v4s:+ }10.101.2.$((10 + i))"
    v6s+="${v6s:+ }fd00:101:2::$((10 + i))"
  done
  cat <<ENV
CHAIN_PREFIX=$PREFIX
CHAIN_NS_GEN=$PREFIX-gen
CHAIN_NS_RTR=$PREFIX-rtr
CHAIN_NS_SINK=$PREFIX-sink
CHAIN_GEN_IF=eth0
CHAIN_RTR_GEN_IF=gen0
CHAIN_RTR_SINK_IF=sink0
CHAIN_SINK_IF=eth0
CHAIN_MAC_GEN=$CHAIN_MAC_GEN
CHAIN_MAC_RTR_GEN=$CHAIN_MAC_RTR_GEN
CHAIN_MAC_RTR_SINK=$CHAIN_MAC_RTR_SINK
CHAIN_MAC_SINK=$CHAIN_MAC_SINK
CHAIN_RTR_IPV4=10.101.2.1
CHAIN_RTR_IPV6=fd00:101:2::1
CHAIN_VIP4=10.101.0.100
CHAIN_VIP6=fd00:101::100
CHAIN_SRC4_NET=10.102.0.0/16
CHAIN_SRC6_NET=fd00:102::/64
CHAIN_ENDPOINTS=$ENDPOINTS
CHAIN_EP_IPV4="$v4s"
CHAIN_EP_IPV6="$v6s"
ENV
}

chain_up() {
  check_tools
  if ! [[ "$ENDPOINTS" =~ ^[0-9]+$ ]] || (( ENDPOINTS < 1 || ENDPOINTS > CHAIN_MAX_ENDPOINTS )); then
    die "--endpoints must be 1..$CHAIN_MAX_ENDPOINTS, got '$ENDPOINTS'"
  fi
  [[ "$PREFIX" =~ ^[a-z0-9][a-z0-9-]{0,11}$ ]] ||
    die "--prefix must match [a-z0-9][a-z0-9-]{0,11}, got '$PREFIX'"
  [[ -z "$(chain_namespaces)" ]] || die "chain '$PREFIX' is already up (lab.sh chain down --prefix $PREFIX)"
  trap 'echo "lab.sh: chain up failed, taking it down" >&2; chain_down >/dev/null 2>&1 || true' ERR

  local gen="$PREFIX-gen" rtr="$PREFIX-rtr" sink="$PREFIX-sink" ns i q
  q="$(nproc)"
  for ns in "$gen" "$rtr" "$sink"; do
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    sysctl_ns "$ns" net.ipv6.conf.all.accept_dad=0
    sysctl_ns "$ns" net.ipv6.conf.default.accept_dad=0
  done
  ip -n "$gen" link add eth0 address "$CHAIN_MAC_GEN" numtxqueues "$q" numrxqueues "$q" type veth \
    peer name gen0 address "$CHAIN_MAC_RTR_GEN" numtxqueues "$q" numrxqueues "$q" netns "$rtr"
  ip -n "$rtr" link add sink0 address "$CHAIN_MAC_RTR_SINK" numtxqueues "$q" numrxqueues "$q" \
    type veth peer name eth0 address "$CHAIN_MAC_SINK" numtxqueues "$q" numrxqueues "$q" netns "$sink"

  ip -n "$gen" addr add 10.101.1.2/24 dev eth0
  addr6 "$gen" fd00:101:1::2/64 eth0
  ip -n "$rtr" addr add 10.101.1.1/24 dev gen0
  addr6 "$rtr" fd00:101:1::1/64 gen0
  ip -n "$rtr" addr add 10.101.2.1/24 dev sink0
  addr6 "$rtr" fd00:101:2::1/64 sink0
  ip -n "$sink" addr add 10.101.2.2/24 dev eth0
  addr6 "$sink" fd00:101:2::2/64 eth0
  for ((i = 1; i <= ENDPOINTS; i++)); do
    ip -n "$sink" addr add "10.101.2.$((10 + i))/24" dev eth0
    addr6 "$sink" "fd00:101:2::$((10 + i))/64" eth0
    ip -n "$rtr" neigh replace "10.101.2.$((10 + i))" lladdr "$CHAIN_MAC_SINK" dev sink0 nud permanent
    ip -n "$rtr" -6 neigh replace "fd00:101:2::$((10 + i))" lladdr "$CHAIN_MAC_SINK" dev sink0 nud permanent
  done
  for ns in "$gen" "$rtr" "$sink"; do
    for dev in $(ip -n "$ns" -o link show | awk -F': ' '{print $2}' | cut -d@ -f1); do
      ip -n "$ns" link set "$dev" up
    done
  done
  ip -n "$rtr" neigh replace 10.101.1.2 lladdr "$CHAIN_MAC_GEN" dev gen0 nud permanent
  ip -n "$rtr" -6 neigh replace fd00:101:1::2 lladdr "$CHAIN_MAC_GEN" dev gen0 nud permanent
  ip -n "$rtr" neigh replace 10.101.2.2 lladdr "$CHAIN_MAC_SINK" dev sink0 nud permanent
  ip -n "$rtr" -6 neigh replace fd00:101:2::2 lladdr "$CHAIN_MAC_SINK" dev sink0 nud permanent
  ip -n "$rtr" route add 10.102.0.0/16 via 10.101.1.2
  ip -n "$rtr" -6 route add fd00:102::/64 via fd00:101:1::2
  ip -n "$gen" route add default via 10.101.1.1
  ip -n "$gen" -6 route add default via fd00:101:1::1
  ip -n "$sink" route add default via 10.101.2.1
  ip -n "$sink" -6 route add default via fd00:101:2::1
  sysctl_ns "$rtr" net.ipv4.ip_forward=1
  sysctl_ns "$rtr" net.ipv6.conf.all.forwarding=1
  for ns in "$rtr" "$sink"; do
    sysctl_ns "$ns" net.ipv4.conf.all.rp_filter=0
    sysctl_ns "$ns" net.ipv4.conf.default.rp_filter=0
  done
  # XDP forwarders hand the kernel frames already sourced from the router (pass_no_neigh).
  sysctl_ns "$rtr" net.ipv4.conf.all.accept_local=1
  for dev in gen0 sink0; do
    sysctl_ns "$rtr" "net.ipv4.conf.$dev.rp_filter=0"
    sysctl_ns "$rtr" "net.ipv4.conf.$dev.accept_local=1"
  done
  # Frames XDP_TX'd or redirected into a veth arrive only if the peer has XDP or GRO on
  # (DESIGN.md): GRO on every end, so the kernel path (nftables) receives them too.
  in_ns "$rtr" ethtool -K gen0 gro on >/dev/null
  in_ns "$rtr" ethtool -K sink0 gro on >/dev/null
  in_ns "$sink" ethtool -K eth0 gro on >/dev/null
  in_ns "$gen" ethtool -K eth0 gro on >/dev/null

  mkdir -p "$(state_dir)"
  if ! mountpoint -q /sys/fs/bpf; then mount -t bpf bpf /sys/fs/bpf; fi
  chain_env > "$(state_dir)/chain.env"
  trap - ERR
  echo "chain $PREFIX up: $gen -> $rtr -> $sink, $ENDPOINTS endpoint addresses (lab.sh chain env --prefix $PREFIX)"
}

chain_down() {
  remove_namespaces $(chain_namespaces)
  rm -f "$(state_dir)/chain.env"
  rmdir "$(state_dir)" 2>/dev/null || true
  echo "chain $PREFIX down"
}

cmd_chain() {
  (( $# == 1 )) || die "usage: lab.sh chain up|down|env [--prefix P] [--endpoints N]"
  case "$1" in
    up) chain_up ;;
    down) chain_down ;;
    env)
      [[ -f "$(state_dir)/chain.env" ]] || die "chain '$PREFIX' is not up (lab.sh chain up --prefix $PREFIX)"
      cat "$(state_dir)/chain.env" ;;
    *) die "unknown chain action '$1' (up | down | env)" ;;
  esac
}

main() {
  (( $# >= 1 )) || usage
  local cmd="$1"; shift
  local rest=()
  while (( $# )); do
    case "$1" in
      --prefix) PREFIX="${2:?--prefix needs a value}"; shift 2 ;;
      --endpoints) ENDPOINTS="${2:?--endpoints needs a value}"; shift 2 ;;
      --port) PORT="${2:?--port needs a value}"; shift 2 ;;
      --json) JSON=1; shift ;;
      --kill) KILL=1; shift ;;
      --client-addrs) CLIENT_ADDRS="${2:?--client-addrs needs a value}"; shift 2 ;;
      --snat-pool) SNAT_POOL="${2:?--snat-pool needs a value}"; shift 2 ;;
      --scale) SCALE=1; shift ;;
      --async) ASYNC=1; shift ;;
      -h|--help) usage ;;
      *) rest+=("$1"); shift
         if [[ "$cmd" == exec || "$cmd" == meshd-start ]]; then rest+=("$@"); break; fi ;;
    esac
  done
  case "$cmd" in
    up) cmd_up ;;
    down) cmd_down ;;
    env) cmd_env ;;
    http-servers) cmd_http_servers ;;
    exec) cmd_exec "${rest[@]}" ;;
    meshd-config) cmd_meshd_config ;;
    meshd-start) cmd_meshd_start "${rest[@]}" ;;
    meshd-stop) cmd_meshd_stop ;;
    chain) cmd_chain "${rest[@]}" ;;
    -h|--help|help) usage ;;
    *) die "unknown command '$cmd' (up | down | env | http-servers | exec | meshd-config | meshd-start | meshd-stop | chain)" ;;
  esac
}

main "$@"
