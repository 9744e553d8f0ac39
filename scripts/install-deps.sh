#!/usr/bin/env bash
# install-deps.sh — every Debian 12 package meshpath needs to build, test and run its lab.
# Installs only what is missing, so a prepared machine (or CI) does not touch the network.
set -euo pipefail

PACKAGES=(
  build-essential cmake pkg-config
  clang llvm libbpf-dev bpftool linux-libc-dev libelf-dev zlib1g-dev
  libnl-3-dev libnl-route-3-dev
  libspdlog-dev nlohmann-json3-dev libcli11-dev libyaml-cpp-dev libboost-dev libboost-system-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  iproute2 ethtool curl python3 wrk tcpdump strace
  nftables gnuplot-nox
  prometheus-cpp-dev libsystemd-dev systemd prometheus python3-nftables
  etcd-server etcd-client shellcheck libssl-dev openssl
)

missing=()
for p in "${PACKAGES[@]}"; do
  if [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" != "install ok installed" ]]; then
    missing+=("$p")
  fi
done

if (( ${#missing[@]} == 0 )); then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

if [[ $EUID -ne 0 ]]; then
  echo "install-deps: missing ${missing[*]}; run as root (sudo $0)" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"

# Debian's etcd-server starts a single-member etcd on 127.0.0.1:2379 at install. meshpath's tests
# and lab start their own members (on other ports) and need none: stop and disable that one,
# unless etcd was there before (then it is the host's own).
if [[ " ${missing[*]} " == *" etcd-server "* ]] && [[ -d /run/systemd/system ]]; then
  echo "install-deps: disabling the etcd service the etcd-server package started (meshpath's tests start their own)"
  systemctl disable --now etcd.service || true
fi
