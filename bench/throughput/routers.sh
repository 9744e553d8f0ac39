# routers.sh — sourced by bench/throughput/run.sh and bench/latency/run.sh: the chain both
# measure on (bench_chain_up) and the three routers they compare, each a setup_<name> /
# teardown_<name> pair acting on the router namespace of tools/lab's chain. The routers need
# PKTGEN, MESHD, OUT, STATE, PIN and the CHAIN_* variables bench_chain_up sets (and take
# FLOW_CACHE_SLOTS for meshd's node.flow_cache_slots, default 4096); HELPER_PID holds
# the background process of the router in use.
#   nftables  DNAT in prerouting, a jhash map over the endpoints (kube-proxy's way, in nft)
#   floor     pktgen fwd: the trivial XDP forwarder (MAC rewrite + redirect)
#   meshpath  the real meshd with one UDP service over every endpoint, nat mode
# shellcheck shell=bash

CT_MAX_FILE=/proc/sys/net/netfilter/nf_conntrack_max
CT_MAX_SAVED=""
HELPER_PID=""

setup_nftables() {
  # conntrack holds one entry per flow; its table is global (init namespace only).
  if [[ -w "$CT_MAX_FILE" ]]; then
    CT_MAX_SAVED="$(cat "$CT_MAX_FILE")"
    echo 4194304 > "$CT_MAX_FILE"
  fi
  local i=0 map="" ep
  local rtr="$CHAIN_NS_RTR"
  for ep in $CHAIN_EP_IPV4; do map+="${map:+, }$i : $ep"; i=$((i + 1)); done
  ip netns exec "$rtr" nft -f - <<NFT
table ip mpbench {
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    ip daddr $CHAIN_VIP4 udp dport 80 dnat to jhash ip saddr . udp sport mod $i map { $map }
    ip daddr $CHAIN_VIP4 tcp dport 80 dnat to jhash ip saddr . tcp sport mod $i map { $map }
  }
}
NFT
}
teardown_nftables() {
  ip netns exec "$CHAIN_NS_RTR" nft delete table ip mpbench
  if [[ -n "$CT_MAX_SAVED" ]]; then echo "$CT_MAX_SAVED" > "$CT_MAX_FILE"; CT_MAX_SAVED=""; fi
}

setup_floor() {
  "$PKTGEN" fwd "$CHAIN_RTR_GEN_IF" "$CHAIN_RTR_SINK_IF" --dst-mac "$CHAIN_MAC_SINK" \
    --netns "$CHAIN_NS_RTR" 2>"$OUT/fwd.log" &
  HELPER_PID=$!
  local i
  for ((i = 0; i < 50; i++)); do grep -q "until SIGINT" "$OUT/fwd.log" 2>/dev/null && return; sleep 0.1; done
  die "pktgen fwd did not start: $(cat "$OUT/fwd.log")"
}
teardown_floor() { kill "$HELPER_PID"; wait "$HELPER_PID" 2>/dev/null || true; HELPER_PID=""; }

setup_meshpath() {
  local cfg="$OUT/meshd.yaml" ep
  {
    cat <<YAML
node:
  interfaces: [$CHAIN_RTR_GEN_IF, $CHAIN_RTR_SINK_IF]
  ipv4: $CHAIN_RTR_IPV4
  ipv6: $CHAIN_RTR_IPV6
  # Defaults but one: the generator's UDP flows are one-way (the sink never answers), so every
  # one stays half-open; 1M of them need a half-open table above 1M (the default 262144 holds
  # 256k, and an LRU evicts before it is quite full). SNAT ports: the default auto range.
  half_table_size: 2097152
  flow_cache_slots: ${FLOW_CACHE_SLOTS:-4096}
  xdp_mode: native
  api_socket: $STATE/meshd.sock
  pin_root: $PIN
  state_file: $STATE/state.json
services:
  - name: bench
    vip: $CHAIN_VIP4
    port: 80
    protocol: udp
    forwarding: nat
    endpoints:
YAML
    for ep in $CHAIN_EP_IPV4; do echo "      - {address: $ep, port: 80, weight: 1}"; done
  } > "$cfg"
  rm -rf "$PIN" "$STATE/state.json"
  setsid "$MESHD" --netns "$CHAIN_NS_RTR" --config "$cfg" </dev/null >"$OUT/meshd.log" 2>&1 &
  HELPER_PID=$!
  local i
  for ((i = 0; i < 200; i++)); do
    python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])' \
      "$STATE/meshd.sock" 2>/dev/null && return
    kill -0 "$HELPER_PID" 2>/dev/null || die "meshd exited: $(tail -5 "$OUT/meshd.log")"
    sleep 0.1
  done
  die "meshd did not start: $(tail -5 "$OUT/meshd.log")"
}
teardown_meshpath() {
  kill "$HELPER_PID"; wait "$HELPER_PID" 2>/dev/null || true; HELPER_PID=""
  rm -rf "$PIN"
  # meshd leaves its XDP links pinned on purpose (restarts keep forwarding): unpinned above, and
  # the attachment goes with the last reference.
  ip -n "$CHAIN_NS_RTR" link set "$CHAIN_RTR_GEN_IF" xdp off 2>/dev/null || true
  ip -n "$CHAIN_NS_RTR" link set "$CHAIN_RTR_SINK_IF" xdp off 2>/dev/null || true
}

# Stops whatever router helper still runs; restores the conntrack limit.
routers_cleanup() {
  if [[ -n "$HELPER_PID" ]]; then kill "$HELPER_PID" 2>/dev/null || true; wait "$HELPER_PID" 2>/dev/null || true; fi
  rm -rf "$PIN"
  if [[ -n "$CT_MAX_SAVED" && -w "$CT_MAX_FILE" ]]; then echo "$CT_MAX_SAVED" > "$CT_MAX_FILE"; fi
}

# The part of a benchmark's start both scripts share: root, the built tools (BUILD, ONLY, ROOT and
# a die function set by the caller), OUT (default <build>/bench/NAME), a fresh chain PREFIX with
# ENDPOINTS endpoints torn down however the script ends, and its CHAIN_* variables.
bench_chain_up() {
  local name="$1"
  [[ $EUID -eq 0 ]] || die "needs root (namespaces, XDP)"
  PKTGEN="$BUILD/tools/pktgen/pktgen"
  MESHD="${MESHD:-$BUILD/userspace/meshd/meshd}"
  [[ -x "$PKTGEN" ]] || die "$PKTGEN not built (make -C $BUILD pktgen)"
  [[ -x "$MESHD" || "$ONLY" != *meshpath* ]] || die "$MESHD not built (make -C $BUILD meshd)"
  command -v nft >/dev/null || [[ "$ONLY" != *nftables* ]] || die "nft not found (scripts/install-deps.sh)"
  OUT="${OUT:-$BUILD/bench/$name}"
  mkdir -p "$OUT"
  STATE="/run/meshpath-lab/$PREFIX"
  PIN="/sys/fs/bpf/meshpath-$PREFIX"
  LAB="$ROOT/tools/lab/lab.sh"
  trap bench_chain_down EXIT
  "$LAB" chain down --prefix "$PREFIX" >/dev/null 2>&1 || true
  "$LAB" chain up --prefix "$PREFIX" --endpoints "$ENDPOINTS" >/dev/null
  # shellcheck disable=SC1090
  source "$STATE/chain.env"
}

bench_chain_down() {
  routers_cleanup
  "$LAB" chain down --prefix "$PREFIX" >/dev/null 2>&1 || true
}
