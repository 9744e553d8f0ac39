#!/usr/bin/env python3
"""check_systemd.py UNIT SYSUSERS --meshd PATH [--threshold N] — deploy/systemd/meshd.service and
deploy/sysusers/meshpath.conf checked by systemd's own tools (systemd 252, Debian 12):
- `systemd-analyze verify`: the unit parses, its commands exist, no warning at all (verify exits
  0 on unknown keys and bad values, so any output fails here). The unit names the installed
  /usr/sbin/meshd; a copy pointing at the built meshd is verified, so the binary is real.
- `systemd-analyze security --offline=true --threshold=N`: the sandbox's exposure score, printed;
  above N fails. N = 2.5 by default: the unit scores 2.1 today, and what is left is inherent to
  an XDP loader (root for /sys/fs/bpf, CAP_BPF and CAP_NET_ADMIN, the host's network, AF_INET
  and AF_NETLINK sockets). Losing any one protection of weight >= 0.4 (running with CAP_SYS_ADMIN,
  no ProtectSystem, no SystemCallFilter, ...) crosses it.
- `systemd-sysusers --root=TMP`: the groups are created (in a scratch root, not on this host).
- what the design asks of the unit: Type=notify, ExecReload sends SIGHUP, the capability set,
  no PrivateNetwork.
Both run without systemd as PID 1 (containers, CI): they read files, they talk to no manager.
Exit 77 (skipped) when systemd-analyze is not installed."""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

INSTALLED_MESHD = "/usr/sbin/meshd"
WANT_CAPS = {"CAP_BPF", "CAP_NET_ADMIN", "CAP_PERFMON"}


def run(argv):
    print("$ " + " ".join(argv), flush=True)
    res = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    out = (res.stdout + res.stderr).strip()
    return res.returncode, out


def unit_settings(text):
    settings = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("unit")
    ap.add_argument("sysusers")
    ap.add_argument("--meshd", required=True, help="the built meshd")
    ap.add_argument("--threshold", type=float, default=2.5)
    args = ap.parse_args()
    if shutil.which("systemd-analyze") is None:
        print("SKIP: systemd-analyze not installed (apt-get install systemd)")
        return 77
    problems = []
    with open(args.unit) as f:
        text = f.read()

    s = unit_settings(text)
    exec_start = s.get("ExecStart", [""])[0]
    if not exec_start.startswith(INSTALLED_MESHD + " "):
        problems.append(f"ExecStart={exec_start} does not run {INSTALLED_MESHD}")
    if s.get("Type") != ["notify"]:
        problems.append(f"Type={s.get('Type')}, want notify")
    if not any(re.search(r"kill -HUP \$MAINPID", r) for r in s.get("ExecReload", [])):
        problems.append("ExecReload does not send SIGHUP to $MAINPID")
    caps = set(" ".join(s.get("CapabilityBoundingSet", [])).split())
    if caps != WANT_CAPS:
        problems.append(f"CapabilityBoundingSet {sorted(caps)}, want {sorted(WANT_CAPS)}")
    if s.get("PrivateNetwork", ["no"])[-1] not in ("no", "false", "0"):
        problems.append("PrivateNetwork= would keep XDP from the host's interfaces")

    with tempfile.TemporaryDirectory() as tmp:
        unit = os.path.join(tmp, os.path.basename(args.unit))
        with open(unit, "w") as f:
            f.write(text.replace(INSTALLED_MESHD, os.path.abspath(args.meshd)))
        rc, out = run(["systemd-analyze", "verify", "--man=no", unit])
        if out:
            print(out)
        if rc != 0 or out:
            problems.append(f"systemd-analyze verify: exit {rc}, output {out!r}")

        # --threshold takes the score x 10 as a whole number (2.5 -> 25), as systemd keeps it.
        rc, out = run(["systemd-analyze", "security", "--offline=true",
                       f"--threshold={round(args.threshold * 10)}", unit])
        m = re.search(r"Overall exposure level for \S+: ([0-9.]+) (\w+)", out)
        for line in out.splitlines():
            if line.startswith("✗") or "Overall" in line:
                print(line)
        if m is None:
            problems.append(f"systemd-analyze security printed no score (exit {rc}): {out[-500:]}")
        else:
            score = float(m.group(1))
            print(f"exposure score: {score} {m.group(2)} (threshold {args.threshold:g})")
            if score > args.threshold or rc != 0:
                problems.append(f"exposure {score} above {args.threshold:g} (exit {rc})")

        root = os.path.join(tmp, "root")
        os.makedirs(os.path.join(root, "etc"))
        rc, out = run(["systemd-sysusers", f"--root={root}", os.path.abspath(args.sysusers)])
        groups = ""
        if os.path.exists(os.path.join(root, "etc/group")):
            with open(os.path.join(root, "etc/group")) as f:
                groups = f.read()
        print(groups.strip())
        for g in ("meshpath", "meshpath-read"):
            if not re.search(rf"^{re.escape(g)}:", groups, re.M):
                problems.append(f"systemd-sysusers did not create group {g} (exit {rc}: {out})")
        for g in s.get("SupplementaryGroups", []):
            for name in g.split():
                if not re.search(rf"^{re.escape(name)}:", groups, re.M):
                    problems.append(f"SupplementaryGroups={name} is not created by {args.sysusers}")

    for p in problems:
        print(f"FAIL {p}", file=sys.stderr)
    if problems:
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
