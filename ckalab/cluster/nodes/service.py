"""The kubelet as a service on a real node: what `systemctl` and `journalctl` do on a kubeadm node.

    python -m ckalab.cluster.nodes.service CLUSTER_DIR NODE systemctl ACTION [UNIT]
    python -m ckalab.cluster.nodes.service CLUSTER_DIR NODE journalctl [-u UNIT] [-n N] [-f]

`ckalab ssh NODE` puts `systemctl` and `journalctl` on the node's PATH as small scripts that
call this, so the exam's steps work in the node's shell: `systemctl restart kubelet` after an
edit of /var/lib/kubelet/config.yaml, `systemctl status kubelet`, `journalctl -u kubelet`.
Only the kubelet (and containerd) are units here; `daemon-reload` is accepted and does nothing.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

UNITS = ("kubelet", "containerd")


def _node(cluster_dir: str, name: str):
    import os

    from ...cluster import get_cluster
    from . import for_cluster

    # <home>/clusters/<name>: the cluster is found through its home, as `ckalab` finds it.
    os.environ["CKALAB_HOME"] = str(Path(cluster_dir).parent.parent)
    cluster = get_cluster(Path(cluster_dir).name, "local")
    return for_cluster(cluster).node(name)


def systemctl(node, action: str, unit: str) -> int:
    from . import ensure_binaries, stop_pids

    unit = unit.removesuffix(".service")
    if action == "daemon-reload":
        return 0
    if unit not in UNITS:
        print(f"Unit {unit}.service not found (this node runs: {', '.join(UNITS)}).", file=sys.stderr)
        return 5
    pids = node.nodes.processes().get(f"{node.name}/{unit}", [])
    if action in ("status", "is-active"):
        state = "active (running)" if pids else "inactive (dead)"
        if action == "is-active":
            print("active" if pids else "inactive")
            return 0 if pids else 3
        print(f"* {unit}.service - {unit} of node {node.name} (ckalab)\n     Active: {state}"
              + (f"\n   Main PID: {(node.nodes.main_pids(f'{node.name}/{unit}') or pids)[0]}" if pids else ""))
        print("\n".join(_tail(node.p(f"logs/{unit}.log"), 10)))
        return 0 if pids else 3
    if action not in ("start", "stop", "restart"):
        print(f"systemctl {action}: not available on this node (start, stop, restart, status, "
              "is-active, daemon-reload).", file=sys.stderr)
        return 1
    if action in ("stop", "restart") and pids:
        stop_pids(pids)
    if action in ("start", "restart") and (action == "restart" or not pids):
        if unit == "containerd":
            print("containerd is restarted by `ckalab up` on this machine.", file=sys.stderr)
            return 1
        bins = ensure_binaries(lambda m: None)
        node.start_kubelet(bins)  # its progress is in `journalctl -u kubelet`
    return 0


def journalctl(node, args: list[str]) -> int:
    unit, lines, follow = "kubelet", 50, False
    it = iter(args)
    for a in it:
        if a in ("-u", "--unit"):
            unit = next(it, "kubelet").removesuffix(".service")
        elif a.startswith("-u") and len(a) > 2:
            unit = a[2:].removesuffix(".service")
        elif a in ("-n", "--lines"):
            lines = int(next(it, "50"))
        elif a in ("-f", "--follow"):
            follow = True
        elif a in ("-x", "-e", "--no-pager", "-l"):
            pass
    if unit not in UNITS:
        print(f"No journal for {unit} on this node (units: {', '.join(UNITS)}).", file=sys.stderr)
        return 1
    log = node.p(f"logs/{unit}.log")
    print("\n".join(_tail(log, lines)))
    if follow:
        with open(log, errors="replace") as f:
            f.seek(0, 2)
            try:
                while True:
                    line = f.readline()
                    if line:
                        print(line, end="", flush=True)
                    else:
                        time.sleep(0.5)
            except KeyboardInterrupt:
                return 0
    return 0


def _tail(path: Path, n: int) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[-n:]
    except OSError:
        return []


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    node = _node(argv[0], argv[1])
    if argv[2] == "systemctl":
        rest = [a for a in argv[3:] if not a.startswith("-")]
        if not rest:
            print("usage: systemctl ACTION [kubelet]", file=sys.stderr)
            return 2
        return systemctl(node, rest[0], rest[1] if len(rest) > 1 else "kubelet")
    if argv[2] == "journalctl":
        return journalctl(node, argv[3:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
