#!/usr/bin/env bash
# check_shellcheck.sh ROOT — runs shellcheck on every vagrant/provision/*.sh and on these test
# scripts, found when the test runs, so a new script is checked without a change here.
# Exit 77 (skipped) without shellcheck (Debian: apt-get install shellcheck; install-deps.sh has it).
set -euo pipefail

root="${1:?usage: check_shellcheck.sh ROOT}"
if ! command -v shellcheck >/dev/null; then
  echo "SKIP: shellcheck not installed (apt-get install shellcheck)"
  exit 77
fi
shopt -s nullglob
scripts=("$root"/vagrant/provision/*.sh "$root"/tests/vagrant/*.sh)
((${#scripts[@]} > 0)) || { echo "no scripts under $root/vagrant/provision" >&2; exit 1; }
shellcheck --version | sed -n 's/^version: /shellcheck /p'
# -x: follow the `source` of lib.sh (its path is given by a directive beside each source line)
shellcheck -x "${scripts[@]}"
echo "shellcheck: ${#scripts[@]} scripts clean"
