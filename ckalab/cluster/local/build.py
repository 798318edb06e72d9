"""Build (once per machine) the real upstream control-plane binaries from the Go module proxy.

No registry we can reach ships kube-apiserver, so we compile it: gomod/kubernetes requires
k8s.io/kubernetes and replaces its staging modules with the published ones (upstream's own
replace directives point into its repo and make `go install` fail); gomod/etcd wraps
etcdmain; gomod/kwok pins kwok. Results are cached per version under ~/.cache/ckalab/bin.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from ... import home
from ...errors import CkalabError

# Kubernetes 1.36 is what kind v0.33.0 (kind/cluster.yaml) ships, so both backends teach the same version.
K8S_VERSION = "v1.36.3"
# etcd 3.6 is the line kubeadm 1.36 deploys.
ETCD_VERSION = "v3.6.16"
# kwok 0.8 is built against the 1.36 client libraries.
KWOK_VERSION = "v0.8.0"

GOMOD = Path(__file__).parent / "gomod"

# group -> (version, go module dir, packages, binaries)
GROUPS = {
    "kubernetes": (K8S_VERSION, "kubernetes", [
        "k8s.io/kubernetes/cmd/kube-apiserver",
        "k8s.io/kubernetes/cmd/kube-controller-manager",
        "k8s.io/kubernetes/cmd/kube-scheduler",
    ], ["kube-apiserver", "kube-controller-manager", "kube-scheduler"]),
    "etcd": (ETCD_VERSION, "etcd", ["."], ["etcd"]),
    "kwok": (KWOK_VERSION, "kwok", ["sigs.k8s.io/kwok/cmd/kwok"], ["kwok"]),
}

# --- real nodes (opt-in: `ckalab up --nodes real`, ckalab/cluster/nodes) -------------------------
# Never built by ensure_binaries(): the default cluster (kwok nodes) does not need them.
CONTAINERD_VERSION = "v2.2.9"
RUNC_VERSION = "v1.3.7"
CRI_TOOLS_VERSION = "v1.34.0"
KUBE_ROUTER_VERSION = "v2.1.0"  # what the module proxy serves; dependencies raised in its go.mod
# Our build of it (gomod/kube-router/kube-router/main.go): its network policy controller alone,
# sync-requesting events handed over in batches. The suffix names the cache dir and --version.
KUBE_ROUTER_BUILD = f"{KUBE_ROUTER_VERSION}-ckalab.1"
NODE_GROUPS = {
    # kubelet and kubeadm come from the same module (and so the same version) as the control plane.
    "kubelet": (K8S_VERSION, "kubernetes", [
        "k8s.io/kubernetes/cmd/kubelet",
        "k8s.io/kubernetes/cmd/kubeadm",
    ], ["kubelet", "kubeadm"]),
    "containerd": (CONTAINERD_VERSION, "containerd", [
        "github.com/containerd/containerd/v2/cmd/containerd",
        "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2",
        "github.com/containerd/containerd/v2/cmd/ctr",
    ], ["containerd", "containerd-shim-runc-v2", "ctr"]),
    "runc": (RUNC_VERSION, "runc", ["github.com/opencontainers/runc"], ["runc"]),
    "cri-tools": (CRI_TOOLS_VERSION, "cri-tools", ["sigs.k8s.io/cri-tools/cmd/crictl"], ["crictl"]),
    # etcdctl for the control-plane node's shell (and the etcd image), same release as etcd.
    "etcdctl": (ETCD_VERSION, "etcdctl", ["go.etcd.io/etcd/etcdctl/v3"], ["etcdctl"]),
    # agnhost (Kubernetes' test server and client) for the network-policies lab's pods.
    "agnhost": (K8S_VERSION, "kubernetes-extras", ["k8s.io/kubernetes/test/images/agnhost"], ["agnhost"]),
    # kube-proxy (iptables mode) in each node's namespace: pods reach Services (the API server at 10.96.0.1).
    "kube-proxy": (K8S_VERSION, "kubernetes-extras", ["k8s.io/kubernetes/cmd/kube-proxy"], ["kube-proxy"]),
    # kube-router, firewall only: NetworkPolicy enforcement with iptables + ipset.
    "kube-router": (KUBE_ROUTER_BUILD, "kube-router", ["./kube-router"], ["kube-router"]),
    # Our own programs for the images we build (pause) and for the clock test (clockprobe).
    "nodeimages": ("v2", "nodeimages", ["./pause", "./clockprobe", "./kubecall"], ["pause", "clockprobe", "kubecall"]),
}
# runc applies seccomp profiles through libseccomp, so it needs cgo and the seccomp tag; a
# runc without them would silently run containers with no profile at all.
CGO_GROUPS = {"runc": "seccomp"}
VERSION_FLAGS = {
    "containerd": ["github.com/containerd/containerd/v2/version.Version"],
    "runc": ["main.version"],
    "cri-tools": ["sigs.k8s.io/cri-tools/pkg/version.Version"],
    "kube-router": ["github.com/cloudnativelabs/kube-router/v2/pkg/version.Version"],
}


def _spec(group: str):
    return GROUPS[group] if group in GROUPS else NODE_GROUPS[group]


def _ldflags(group: str) -> str:
    """Version stamps the upstream Makefile sets, so `kube-apiserver --version` and /version tell the truth."""
    version, moddir = _spec(group)[:2]
    if not moddir.startswith("kubernetes"):
        return " ".join(["-s", "-w", *(f"-X {v}={version.lstrip('v') if group == 'runc' else version}"
                                        for v in VERSION_FLAGS.get(group, ()))])
    major, minor = version.lstrip("v").split(".")[:2]
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [f"-X {pkg}.{k}={v}" for k, v in (
            ("gitVersion", version), ("gitMajor", major), ("gitMinor", minor),
            ("gitTreeState", "clean"), ("buildDate", "1970-01-01T00:00:00Z"))]
    return " ".join(flags)


def group_dir(group: str) -> Path:
    return home.bin_cache() / f"{group}-{_spec(group)[0]}"


def _from_assets(binary: str) -> Path | None:
    """envtest's convention: KUBEBUILDER_ASSETS may already hold etcd and kube-apiserver."""
    assets = os.environ.get("KUBEBUILDER_ASSETS")
    if assets:
        p = Path(assets) / binary
        if p.is_file() and os.access(p, os.X_OK):
            return p
    return None


def find_binaries(groups: dict | None = None) -> tuple[dict[str, Path], list[str]]:
    """Paths of the binaries we already have, and the groups still to build (of `groups`:
    the control plane's unless told otherwise)."""
    found: dict[str, Path] = {}
    missing: list[str] = []
    for group, (_, _, _, bins) in (GROUPS if groups is None else groups).items():
        for b in bins:
            p = _from_assets(b) or group_dir(group) / b
            if p.is_file() and os.access(p, os.X_OK):
                found[b] = p
            elif group not in missing:
                missing.append(group)
    return found, missing


def _ticker(progress, what: str, stop: threading.Event, every: float = 60.0) -> None:
    start = time.monotonic()
    while not stop.wait(every):
        progress(f"  ... still building {what} ({time.monotonic() - start:.0f}s so far)")


def build_group(group: str, progress=print) -> float:
    """Compile one group into the cache; returns seconds taken."""
    go = shutil.which("go")
    if not go:
        raise CkalabError(
            "Go is not installed, and the local backend builds kube-apiserver and friends from "
            "source the first time. Install Go >= 1.26 (https://go.dev/doc/install; distribution "
            "packages are often older), or use a Docker machine with 'ckalab up --backend kind'."
        )
    version, moddir, pkgs, bins = _spec(group)
    out = group_dir(group)
    out.parent.mkdir(parents=True, exist_ok=True)
    what = f"{', '.join(bins)} {version}"
    progress(f"Building {what} from the Go module proxy (once per machine; takes minutes on a laptop) ...")
    start = time.monotonic()
    stop = threading.Event()
    threading.Thread(target=_ticker, args=(progress, what, stop), daemon=True).start()
    tmp = Path(tempfile.mkdtemp(prefix=f".{group}-", dir=out.parent))
    env = dict(os.environ, CGO_ENABLED="1" if group in CGO_GROUPS else "0",
               GOFLAGS="-mod=readonly -buildvcs=false")
    tags = ["-tags", CGO_GROUPS[group]] if group in CGO_GROUPS else []
    try:
        cmd = [go, "build", "-trimpath", *tags, "-ldflags", _ldflags(group), "-o", str(tmp) + "/", *pkgs]
        proc = subprocess.run(cmd, cwd=GOMOD / moddir, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise CkalabError(f"Building {what} failed (go build in {GOMOD / moddir}):\n{proc.stderr[-3000:]}")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        stop.set()
        shutil.rmtree(tmp, ignore_errors=True)
    took = time.monotonic() - start
    progress(f"Built {what} in {took:.0f}s into {out}")
    return took


def ensure_binaries(progress=print, groups: dict | None = None) -> dict[str, Path]:
    """Return {binary: path}, building what is missing. Safe to call from several processes."""
    found, missing = find_binaries(groups)
    if not missing:
        return found
    home.bin_cache().mkdir(parents=True, exist_ok=True)
    with open(home.bin_cache() / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second `ckalab up` waits for the first build
        for group in find_binaries(groups)[1]:
            if group in CGO_GROUPS and not Path("/usr/include/seccomp.h").exists():
                raise CkalabError(f"Building {group} needs Debian's libseccomp-dev (apt-get install libseccomp-dev).")
            build_group(group, progress)
    found, missing = find_binaries(groups)
    if missing:
        raise CkalabError(f"Binaries still missing after the build: {missing}")
    return found

