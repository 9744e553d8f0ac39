#!/usr/bin/env bash
# bench/throughput/run.sh — packets per second delivered through the router of tools/lab's chain
# (gen -> router -> sink, veth links), for 1, 1k, 100k and 1M UDP flows, in one run:
#   nftables  DNAT in the router (numgen-free jhash map over the endpoints): what kube-proxy
#             users run today
#   floor     the trivial XDP forwarder (pktgen fwd: MAC rewrite + redirect), the ceiling of
#             this topology
#   meshpath  the real meshd, nat mode, one service, N endpoints, in the router namespace
# pktgen sends from the gen namespace (BPF_PROG_RUN live frames) to the VIP and counts at the
# sink (XDP), after a warm-up. Prints a table with meshpath's ratios, writes results.json,
# results.dat and a PNG chart (gnuplot) into --out. Root. Not a test: it reports, it never fails
# on a figure.
#
# usage: bench/throughput/run.sh [--build DIR] [--meshd PATH] [--out DIR] [--flows "1 1000 100000 1000000"]
#                                [--seconds S] [--warmup S] [--threads N] [--endpoints N]
#                                [--only nftables,floor,meshpath]
set -Eeuo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
BUILD="${MESHPATH_BUILD_DIR:-$ROOT/build}"
OUT=""
FLOWS="1 1000 100000 1000000"
SECONDS_MEASURED=3
WARMUP=1
THREADS="$(nproc)"
ENDPOINTS=64
ONLY="nftables,floor,meshpath"
PREFIX=mptp

die() { echo "throughput: $*" >&2; exit 2; }
usage() { sed -n '/^# usage:/,/^set -E/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }

while (( $# )); do
  case "$1" in
    --build) BUILD="${2:?}"; shift 2 ;;
    --meshd) MESHD="${2:?}"; shift 2 ;;
    --out) OUT="${2:?}"; shift 2 ;;
    --flows) FLOWS="${2:?}"; shift 2 ;;
    --seconds) SECONDS_MEASURED="${2:?}"; shift 2 ;;
    --warmup) WARMUP="${2:?}"; shift 2 ;;
    --threads) THREADS="${2:?}"; shift 2 ;;
    --endpoints) ENDPOINTS="${2:?}"; shift 2 ;;
    --only) ONLY="${2:?}"; shift 2 ;;
    -h|--help) usage ;;
    *) die "unknown option '$1' (--help)" ;;
  esac
done
# shellcheck source=../throughput/routers.sh
source "$ROOT/bench/throughput/routers.sh"
bench_chain_up throughput

# One point: UDP to the VIP from 16 source addresses x 64512 ports, `flows` of those pairs.
measure() {
  local flows="$1"
  "$PKTGEN" send "$CHAIN_GEN_IF" --netns "$CHAIN_NS_GEN" --dst-mac "$CHAIN_MAC_RTR_GEN" \
    --dst-ip "$CHAIN_VIP4" --dst-port 80 --proto udp \
    --src-ip 10.102.0.1-10.102.0.16 --src-port 1024-65535 --flows "$flows" \
    --duration "$(awk -v a="$WARMUP" -v b="$SECONDS_MEASURED" 'BEGIN{print a+b}')" --warmup "$WARMUP" \
    --threads "$THREADS" --rx "$CHAIN_SINK_IF" --rx-netns "$CHAIN_NS_SINK" --json -q \
    > "$OUT/last.json"
  python3 -c 'import json,sys; j=json.load(open(sys.argv[1])); print("%.4f %.4f" % (j["pps"]/1e6, j["rx"]["pps"]/1e6))' "$OUT/last.json"
}

declare -A RX TX
IFS=',' read -r -a CASES <<< "$ONLY"
echo "throughput: chain $PREFIX, $THREADS sender thread(s), ${WARMUP}s warm-up + ${SECONDS_MEASURED}s per point, flows: $FLOWS" >&2
# Each flow count measures every router back to back (a fresh router each time), so the ratios
# compare figures taken seconds apart: a noisy neighbour on a shared machine then moves all
# three, where measuring one router at every flow count and then the next would skew one.
for f in $FLOWS; do
  for c in "${CASES[@]}"; do
    "setup_$c"
    read -r tx rx < <(measure "$f")
    "teardown_$c"
    TX[$c,$f]="$tx"
    RX[$c,$f]="$rx"
    printf 'throughput: %-9s %8s flows: sent %.3f Mpps, delivered %.3f Mpps\n' "$c" "$f" "$tx" "$rx" >&2
  done
done

# Table, data file for gnuplot, JSON.
ratio() { python3 -c 'import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print("%.2f" % (a/b) if b > 0 else "-")' "$1" "$2"; }
{
  printf '%-10s %10s %10s %10s %14s %14s\n' flows nftables floor meshpath "mp/floor" "mp/nftables"
  for f in $FLOWS; do
    printf '%-10s %10s %10s %10s %14s %14s\n' "$f" "${RX[nftables,$f]:--}" "${RX[floor,$f]:--}" \
      "${RX[meshpath,$f]:--}" "$(ratio "${RX[meshpath,$f]:-0}" "${RX[floor,$f]:-0}")" \
      "$(ratio "${RX[meshpath,$f]:-0}" "${RX[nftables,$f]:-0}")"
  done
} | tee "$OUT/results.txt"
echo "(Mpps delivered at the sink; target: mp/floor >= 0.9, mp/nftables >= 4)"

{
  echo "# flows nftables floor meshpath (Mpps delivered)"
  for f in $FLOWS; do echo "$f ${RX[nftables,$f]:-0} ${RX[floor,$f]:-0} ${RX[meshpath,$f]:-0}"; done
} > "$OUT/results.dat"

python3 - "$OUT/results.dat" "$OUT/results.json" "$THREADS" "$SECONDS_MEASURED" <<'PY'
import json, sys
rows = []
for line in open(sys.argv[1]):
    if line.startswith("#"): continue
    f, n, fl, m = line.split()
    n, fl, m = float(n), float(fl), float(m)
    rows.append({"flows": int(f), "nftables_mpps": n, "floor_mpps": fl, "meshpath_mpps": m,
                 "meshpath_vs_floor": m / fl if fl else None,
                 "meshpath_vs_nftables": m / n if n else None})
json.dump({"threads": int(sys.argv[3]), "seconds": float(sys.argv[4]), "points": rows},
          open(sys.argv[2], "w"), indent=2)
PY

if command -v gnuplot >/dev/null; then
  gnuplot <<GP
set terminal pngcairo size 900,540 noenhanced font ",11"
set output "$OUT/throughput.png"
set title "UDP through the router (gen -> router -> sink, veth), $THREADS sender thread(s)"
set xlabel "flows"
set ylabel "Mpps delivered"
set logscale x
set xrange [0.5:2000000]
set yrange [0:*]
set key top right
set offsets 0, 0, 0.8, 0   # room above the lines for the key
set grid
plot "$OUT/results.dat" using 1:3 with linespoints lw 2 title "trivial XDP forwarder (floor)", \
     "" using 1:4 with linespoints lw 2 title "meshpath nat", \
     "" using 1:2 with linespoints lw 2 title "nftables DNAT"
GP
  echo "chart: $OUT/throughput.png"
else
  echo "throughput: gnuplot not found, no chart (scripts/install-deps.sh)" >&2
fi
echo "results: $OUT/results.txt $OUT/results.json"
