"""Figures for real nodes (docs/real-nodes.md), each measured on a cluster of its own:

  first `up`    a fresh CKALAB_HOME: nodes made, images imported (and built, with --cold-images)
  warm `up`     after `down`: until every node is Ready and a new pod on node01 is Running
  RSS           of every process of the cluster: control plane, kubelets, containerds, shims,
                containers, relay and kwok
  pod           create -> Running on node01 (median)
  edit          an edit of the API server's manifest -> /readyz answers with the new flags
  restore       `ckalab restore-manifests` after that edit -> /readyz answers again
  down          `ckalab down` of the whole cluster

    sudo .venv/bin/python bench/real_nodes.py [--rounds 5] [--cold-images]

Needs root and the real-node binaries (built on first use). Goals from issue 10: warm up <= 20 s,
RSS <= 1.5 GiB, pod -> Running <= 2 s, manifest edit -> ready <= 20 s. Prints the load average
with the figures: on a shared 2-core machine they move with it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _kubectl(cluster, *args: str, input: str | None = None) -> str:
    env = dict(os.environ, KUBECONFIG=str(cluster.kubeconfig))
    return subprocess.run(["kubectl", *args], env=env, input=input, capture_output=True, text=True,
                          check=True, timeout=120).stdout


def _pod(cluster, name: str) -> float:
    from ckalab.cluster.nodes import images
    from ckalab.waiting import wait_for

    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
           "spec": {"nodeName": "node01", "terminationGracePeriodSeconds": 0,
                    "containers": [{"name": "main", "image": images.busybox_image(),
                                    "imagePullPolicy": "Never", "command": ["sleep", "3600"]}]}}
    t = time.monotonic()
    _kubectl(cluster, "apply", "-f", "-", input=json.dumps(pod))
    wait_for(lambda: json.loads(_kubectl(cluster, "get", "pod", name, "-o", "json"))["status"].get("phase")
             == "Running", 60, f"pod {name} Running", interval=0.05)
    return time.monotonic() - t


def _rss_mib(rn) -> float:
    """Every process of the cluster: marked ones (ours, kwok, the relay, kubelets, containerds and
    the shims below them) and everything in the nodes' cgroups (containers)."""
    tag = f"ckalab-{rn.tag}-"
    cluster_dir = str(rn.cluster.dir)
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            mine = tag in Path(entry.path, "cgroup").read_text()
            if not mine:
                env = Path(entry.path, "environ").read_bytes()
                mine = f"CKALAB_CLUSTER_DIR={cluster_dir}".encode() in env.split(b"\0")
            if mine:
                for line in Path(entry.path, "status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def _edit_to_ready(cluster) -> tuple[float, float]:
    from ckalab.waiting import wait_for

    path = cluster.etc / "manifests" / "kube-apiserver.yaml"
    text = path.read_text()
    t = time.monotonic()
    path.write_text(text.replace("    - --allow-privileged=true\n",
                                 "    - --allow-privileged=true\n    - --profiling=false\n"))
    wait_for(lambda: not cluster._readyz(timeout=1), 60, "the API server to restart", interval=0.1)
    wait_for(lambda: cluster._readyz(timeout=1), 120, "the API server to answer again", interval=0.1)
    took = time.monotonic() - t
    t = time.monotonic()
    cluster.restore_manifests()  # returns once the old pod is gone and ckalab's file is back
    wait_for(lambda: cluster._readyz(timeout=1), 120, "the API server back", interval=0.1)
    return took, time.monotonic() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--cold-images", action="store_true",
                    help="remove the cached control-plane image archives first (first up builds them)")
    args = ap.parse_args()
    home = tempfile.mkdtemp(prefix="ckalab-bench-nodes-")
    os.environ["CKALAB_HOME"] = home
    os.environ["CKALAB_NODES"] = "real"
    from ckalab import home as ckhome
    from ckalab.cluster import get_cluster, nodes

    if args.cold_images:
        shutil.rmtree(ckhome.bin_cache() / "images", ignore_errors=True)
    nodes.ensure_binaries(print)  # a cold build is not part of the figures below
    cluster = get_cluster("bench", "local")
    rn = nodes.for_cluster(cluster)
    print(f"load before: {_load()}  (machine: {os.cpu_count()} cores)")
    try:
        t = time.monotonic()
        cluster.up(progress=lambda m: None)
        first = time.monotonic() - t
        pods = [_pod(cluster, f"bench-{i}") for i in range(args.rounds)]
        rss = _rss_mib(rn)
        edit, restore = _edit_to_ready(cluster)
        t = time.monotonic()
        cluster.down(progress=lambda m: None)
        down = time.monotonic() - t
        warm = []
        for i in range(min(args.rounds, 3)):
            t = time.monotonic()
            cluster.up(progress=lambda m: None)
            _pod(cluster, f"warm-{i}")
            warm.append(time.monotonic() - t)
            cluster.down(progress=lambda m: None)
    finally:
        cluster.down(progress=lambda m: None)
        shutil.rmtree(home, ignore_errors=True)
    print(f"first up (fresh home{', images built' if args.cold_images else ''}, images imported): {first:.1f} s")
    print(f"warm up to all nodes Ready + a new pod Running (median of {len(warm)}): "
          f"{statistics.median(warm):.1f} s  (goal <= 20 s)")
    print(f"RSS of the whole cluster: {rss:.0f} MiB  (goal <= 1536 MiB)")
    print(f"pod create -> Running on node01 (median of {len(pods)}): {statistics.median(pods):.2f} s  (goal <= 2 s)")
    print(f"API server manifest edit -> /readyz again: {edit:.1f} s  (goal <= 20 s)")
    print(f"restore-manifests (ckalab's manifest back) -> /readyz again: {restore:.1f} s")
    print(f"down: {down:.1f} s")
    print(f"load after: {_load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
