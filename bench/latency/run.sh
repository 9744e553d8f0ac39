#!/usr/bin/env bash
# bench/latency/run.sh — latency added by meshpath over the trivial XDP forwarder (the floor),
# through tools/lab's chain (gen -> router -> sink), at a fixed moderate rate, in one run.
# pktgen stamps each frame's payload with CLOCK_MONOTONIC when it writes it; the sink's XDP
# program subtracts that from its own clock and keeps a histogram (32 ns buckets). One frame per
# kernel batch (--batch 1), so a frame never waits for the rest of its batch. UDP, 1000 flows.
# Prints p50/p99 for each router and meshpath's excess over the floor. Root. Not a test.
#
# usage: bench/latency/run.sh [--build DIR] [--meshd PATH] [--out DIR] [--rate PPS] [--seconds S]
#                             [--flows N] [--only floor,meshpath,nftables]
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD="${MESHPATH_BUILD_DIR:-$ROOT/build}"
OUT=""
RATE=100000
SECONDS_MEASURED=3
FLOWS=1000
ONLY="floor,meshpath"
ENDPOINTS=8
PREFIX=mplat

die() { echo "latency: $*" >&2; exit 2; }
usage() { sed -n '/^# usage:/,/^set -E/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }

while (( $# )); do
  case "$1" in
    --build) BUILD="${2:?}"; shift 2 ;;
    --meshd) MESHD="${2:?}"; shift 2 ;;
    --out) OUT="${2:?}"; shift 2 ;;
    --rate) RATE="${2:?}"; shift 2 ;;
    --seconds) SECONDS_MEASURED="${2:?}"; shift 2 ;;
    --flows) FLOWS="${2:?}"; shift 2 ;;
    --only) ONLY="${2:?}"; shift 2 ;;
    -h|--help) usage ;;
    *) die "unknown option '$1' (--help)" ;;
  esac
done
# shellcheck source=../throughput/routers.sh
source "$ROOT/bench/throughput/routers.sh"
bench_chain_up latency

declare -A P50 P99 RXPPS
IFS=',' read -r -a CASES <<< "$ONLY"
echo "latency: chain $PREFIX, $RATE pps for ${SECONDS_MEASURED}s, $FLOWS UDP flows, 1 sender thread" >&2
for c in "${CASES[@]}"; do
  "setup_$c"
  # A short run first, so meshpath's connections exist and every path is warm.
  "$PKTGEN" send "$CHAIN_GEN_IF" --netns "$CHAIN_NS_GEN" --dst-mac "$CHAIN_MAC_RTR_GEN" \
    --dst-ip "$CHAIN_VIP4" --dst-port 80 --src-ip 10.102.0.1 --src-port 1024-65535 \
    --flows "$FLOWS" --count "$((FLOWS * 2))" --rate "$RATE" -q
  "$PKTGEN" send "$CHAIN_GEN_IF" --netns "$CHAIN_NS_GEN" --dst-mac "$CHAIN_MAC_RTR_GEN" \
    --dst-ip "$CHAIN_VIP4" --dst-port 80 --src-ip 10.102.0.1 --src-port 1024-65535 \
    --flows "$FLOWS" --duration "$SECONDS_MEASURED" --rate "$RATE" --batch 1 --stamp \
    --rx "$CHAIN_SINK_IF" --rx-netns "$CHAIN_NS_SINK" --latency --json -q > "$OUT/$c.json"
  read -r p50 p99 rx < <(python3 -c 'import json,sys; j=json.load(open(sys.argv[1]))["rx"]; l=j["latency"]; print(l["p50_ns"], l["p99_ns"], j["pps"])' "$OUT/$c.json")
  P50[$c]="$p50"; P99[$c]="$p99"; RXPPS[$c]="$rx"
  printf 'latency: %-9s p50 %6.0f ns  p99 %6.0f ns  (delivered %.0f pps)\n' "$c" "$p50" "$p99" "$rx" >&2
  "teardown_$c"
done

{
  printf '%-10s %10s %10s\n' router "p50 ns" "p99 ns"
  for c in "${CASES[@]}"; do printf '%-10s %10.0f %10.0f\n' "$c" "${P50[$c]}" "${P99[$c]}"; done
  if [[ -n "${P50[floor]:-}" && -n "${P50[meshpath]:-}" ]]; then
    printf '%-10s %+10.0f %+10.0f\n' "added" "$(echo "${P50[meshpath]} - ${P50[floor]}" | awk '{print $1 - $3}')" \
      "$(echo "${P99[meshpath]} - ${P99[floor]}" | awk '{print $1 - $3}')"
  fi
} | tee "$OUT/results.txt"
echo "(one-way, generator to sink, 32 ns buckets; 'added' = meshpath - floor)"
