#!/usr/bin/env bash
# validate_vagrantfile.sh VAGRANT_DIR — `vagrant validate` on the lab's Vagrantfile: it parses,
# lab.json loads, every VM's settings and provisioners are known to vagrant. Offline and in a
# few seconds: no box is fetched, no VM is created, and vagrant's state goes to a scratch
# directory (not VAGRANT_DIR/.vagrant, not ~/.vagrant.d). With a provider plugin installed
# (vagrant-libvirt) its settings are checked too; without a usable one vagrant refuses to
# validate them ("No usable default provider", "isn't usable on this system"), and they are
# left out (--ignore-provider). Exit 77 (skipped) without vagrant.
set -euo pipefail

dir="${1:?usage: validate_vagrantfile.sh VAGRANT_DIR}"
if ! command -v vagrant >/dev/null; then
  echo "SKIP: vagrant not installed (apt-get install vagrant [vagrant-libvirt]):" \
    "the Vagrantfile is not validated"
  exit 77
fi
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
export VAGRANT_CWD="$dir" VAGRANT_HOME="$scratch/home" VAGRANT_DOTFILE_PATH="$scratch/dot"
export VAGRANT_CHECKPOINT_DISABLE=1  # no version check over the network

vagrant --version
if out="$(vagrant validate 2>&1)"; then
  echo "$out"
  exit 0
fi
if grep -Eq "No usable default provider|isn't usable on this system" <<<"$out"; then
  echo "no usable provider here: validating without the provider blocks (--ignore-provider)"
  vagrant validate --ignore-provider
  exit
fi
echo "$out"
exit 1
