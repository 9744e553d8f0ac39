#!/usr/bin/env bash
# demo.sh — meshpath end to end on one machine: a lab of network namespaces (lab.sh), meshd in the
# lb namespace balancing real HTTP requests (curl, a new connection each) from the client to three
# endpoints, meshctl showing the spread, then one endpoint failing (its server killed), removed by
# meshd's active health checks, and the traffic moving to the others.
#
# usage: demo.sh [--build-dir DIR] [--prefix P] [--requests N] [--keep]
#   --keep leaves the lab and meshd running at the end (take it down with `lab.sh down --prefix P`)
set -euo pipefail

LAB_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$LAB_DIR/../.." && pwd)"
BUILD_DIR="$ROOT/build"
PREFIX=demo
REQUESTS=300
KEEP=0

while (( $# )); do
  case "$1" in
    --build-dir) BUILD_DIR="$2"; shift 2 ;;
    --prefix) PREFIX="$2"; shift 2 ;;
    --requests) REQUESTS="$2"; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "demo.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[[ $EUID -eq 0 ]] || { echo "demo.sh: needs root (network namespaces, XDP): sudo $0" >&2; exit 2; }

MESHD="$BUILD_DIR/userspace/meshd/meshd"
MESHCTL="$BUILD_DIR/tools/meshctl/meshctl"
if [[ ! -x "$MESHD" || ! -x "$MESHCTL" ]]; then
  echo "==> building meshd and meshctl into $BUILD_DIR"
  MESHPATH_BUILD_DIR="$BUILD_DIR" "$ROOT/scripts/build.sh" >/dev/null
fi

lab() { "$LAB_DIR/lab.sh" "$1" --prefix "$PREFIX" "${@:2}"; }
if [[ -t 1 ]]; then BOLD=$'\033[1m' PLAIN=$'\033[0m'; else BOLD="" PLAIN=""; fi
say() { printf '\n%s==> %s%s\n' "$BOLD" "$*" "$PLAIN"; }
# Runs meshctl and shows the command line first, as a user would type it.
meshctl() { printf '$ meshctl %s\n' "$*"; "$MESHCTL" "$@"; }

cleanup() {
  local rc=$?
  if (( KEEP )); then
    echo "lab $PREFIX left running: lab.sh down --prefix $PREFIX"
  else
    lab meshd-stop >/dev/null 2>&1 || true
    lab down >/dev/null 2>&1 || true
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Sends N requests from the client namespace, each on a new connection, and tallies who answered.
send() {
  local url="$1" n="$2"
  printf '$ for i in $(seq %d); do curl -s %s; done | sort | uniq -c\n' "$n" "$url"
  lab exec client bash -c '
    for ((i = 0; i < $2; i++)); do curl -s --max-time 2 "$1" || echo "failed"; done' _ "$url" "$n" |
    sort | uniq -c | awk -v n="$n" '{printf "  %-8s %5d  %5.1f%%\n", $2, $1, 100 * $1 / n}'
}

say "bringing up the lab '$PREFIX': client -> lb (meshd, XDP) -> 3 endpoints"
lab down >/dev/null 2>&1 || true
lab up --endpoints 3
lab http-servers
# shellcheck disable=SC1090
source "/run/meshpath-lab/$PREFIX/lab.env"
read -r -a EP4 <<<"$LAB_EP_IPV4"
read -r -a EP6 <<<"$LAB_EP_IPV6"
export MESHPATH_SOCKET="$LAB_STATE_DIR/meshd.sock"

CONFIG="$LAB_STATE_DIR/meshd.yaml"
{
  lab meshd-config
  cat <<YAML
services:
  - name: web
    vip: $LAB_VIP4
    port: 80
    endpoints:
      - {address: ${EP4[0]}, port: $LAB_HTTP_PORT, weight: 1}
      - {address: ${EP4[1]}, port: $LAB_HTTP_PORT, weight: 1}
      - {address: ${EP4[2]}, port: $LAB_HTTP_PORT, weight: 1}
    health: {type: http, interval: 200ms, timeout: 100ms, rise: 2, fall: 3, passive_fall: 3}
YAML
} >"$CONFIG"

say "starting meshd in $LAB_NS_LB with $CONFIG"
sed 's/^/  /' "$CONFIG"
lab meshd-start "$MESHD" "$CONFIG"
meshctl status
echo
meshctl service list

say "$REQUESTS HTTP requests to the VIP $LAB_VIP4:80, a new connection each"
send "http://$LAB_VIP4/" "$REQUESTS"
echo
meshctl service show web

say "one endpoint fails: ep2's HTTP server (${EP4[1]}) is killed, and requests keep coming"
printf '$ ip netns pids %s | xargs kill\n' "$PREFIX-ep2"
ip netns pids "$PREFIX-ep2" | xargs -r kill
send "http://$LAB_VIP4/" "$REQUESTS"
echo "  ('failed': ep2's port answered those SYNs with RST; after passive_fall = 3 of them the XDP"
echo "   program marked ep2 down itself, and every later connection skipped it. The active HTTP"
echo "   checks, every 200 ms, confirm it and keep it out.)"
sleep 0.5
echo
meshctl health web
echo
meshctl events

say "$REQUESTS more requests: ep1 and ep3 share them, none fails"
send "http://$LAB_VIP4/" "$REQUESTS"
echo
meshctl stats web
echo "  (counters are totals since meshd started: ep2's are all from before it failed)"

say "the same over IPv6: a service on [$LAB_VIP6]:80, added through the API"
# ep2's server is still down, so this one is made of ep1 and ep3, weighted 1:2.
meshctl service add web6 --vip "$LAB_VIP6" --port 80 \
  --endpoint "[${EP6[0]}]:$LAB_HTTP_PORT" --endpoint "[${EP6[2]}]:$LAB_HTTP_PORT@2"
send "http://[$LAB_VIP6]/" "$REQUESTS"
echo
meshctl stats

say "done"
if (( ! KEEP )); then echo "taking the lab down"; fi
