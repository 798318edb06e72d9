"""Real nodes for the local backend (EXPERIMENTAL, opt-in): `ckalab up --nodes real` or
CKALAB_NODES=real. The default cluster (kwok nodes) is untouched when this is not asked for.

Two real nodes, each with its own kubelet, containerd and network namespace, as on a kubeadm
cluster; node02 stays a kwok node:

  host                                    controlplane's netns                 node01's netns
  relay 127.0.0.1:<api port> ----------->  eth0 10.250.X.10                      eth0 10.250.X.11
  bridge ckb<h> 10.250.X.1/24 <-veth->     kubelet + containerd                 kubelet + containerd
                                           static pods from /etc/kubernetes/    pods on cni0
                                           manifests: etcd, kube-apiserver,     10.245.1.0/24
                                           kube-controller-manager,
                                           kube-scheduler (hostNetwork)

The control plane runs as static pods that the controlplane node's kubelet starts and restarts
from the manifests in <cluster>/etc/kubernetes/manifests, seen on the node as
/etc/kubernetes/manifests: edit one and the component restarts with it. The API server listens in
the controlplane namespace; a relay gives this machine https://127.0.0.1:<api port> (the address
in every kubeconfig), and node01's kubelet talks to the controlplane's address over the bridge.

Each node's containerd, kubelet and pods share one mount namespace of their own (pinned at
nodes/<node>/run/mntns): the exam's paths exist there (/etc/kubernetes, /var/lib/kubelet,
/var/log/pods, and /var/lib/etcd on the controlplane) through overlays on /etc, /var/lib and
/var/log whose writable layers live in the node's directory, so nothing is written to this
machine's own /etc or /var. Every mount goes away with the namespace. Kernel settings the
kubelet would rewrite are masked (_SYSCTL_MASKS). containerd and the kubelet start through
noclock.py, so nothing below them can set the clock. Everything is found again by the
CKALAB_CLUSTER_DIR/CKALAB_COMPONENT markers (processes), by name (links, namespaces) and by path
(cgroups, mounts), so `down` removes all of it even after a crash. See docs/real-nodes.md.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

from ... import home
from ...errors import CkalabError
from ...waiting import BACKOFF_CAP, WaitTimeout, wait_for
from ..local import build, procs
from ..local import pki as kpki
from . import images, private_registry

ENV = "CKALAB_NODES"
CONTROL_PLANE = "controlplane"
NODES = (CONTROL_PLANE, "node01")  # node02 stays a kwok node
COMPONENT_PREFIX = "real-node:"
HERE = Path(__file__).parent
CNI_BIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")  # Debian's containernetworking-plugins, upstream's
# What the kubelet insists on finding in these kernel settings (it rewrites them otherwise, and
# they are this machine's, not the node's): it reads these values from files mounted over them
# in the node's own mount namespace.
_SYSCTL_MASKS = {"vm/overcommit_memory": "1", "vm/panic_on_oom": "0",
                 "kernel/panic": "10", "kernel/panic_on_oops": "1"}
# Directories that containerd creates at fixed host paths whatever its configuration says (the
# kubelet's and libcni's land in the node's overlays); `down` removes them when they are empty.
FIXED_DIRS = ("/run/containerd/s", "/run/containerd")
# Host directories a node sees through an overlay whose writable layer is in the node's
# directory: the exam's paths are created there, never on this machine.
OVERLAID = ("/etc", "/var/lib", "/var/log")
# The cluster's registry (Debian's docker-registry, distribution 2.8) on the bridge's host address:
# the nodes' containerd resolves docker.io and registry.k8s.io there and nowhere else, so a pod's
# image is really pulled, and nothing leaves this machine.
REGISTRY_PORT = 5000
MIRRORED = ("docker.io", "registry.k8s.io")
# kube-router's identity (a client certificate) and what its network policy controller reads.
KUBE_ROUTER_USER = "system:kube-router"
KUBE_ROUTER_RBAC = [
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "ckalab:kube-router"},
     "rules": [{"apiGroups": [""], "resources": ["namespaces", "pods", "services", "endpoints", "nodes"],
                "verbs": ["get", "list", "watch"]},
               {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": ["get", "list", "watch"]},
               {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": "ckalab:kube-router"},
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "ckalab:kube-router"},
     "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": KUBE_ROUTER_USER}]},
]
KUBE_PROXY_HEALTHZ = 10256
KUBERNETES_SERVICE_IP = kpki.SERVICE_IP
# The kubelet's housekeeping period (pkg/kubelet: housekeepingPeriod): a static pod that has
# terminated is forgotten at the pass after its pod directory was cleaned up, at most this long.
KUBELET_HOUSEKEEPING_SECONDS = 2.5
# The kubelet's gauge of pod workers by lifecycle, set at the end of every housekeeping pass: a
# static pod counts as config="desired" while its manifest is there, then as config="orphan"
# until its worker is forgotten (static="true" for both).
WORKING_PODS_METRIC = "kubelet_working_pods{"
# How long kube-router gathers sync-requesting events (pods, namespaces, policies) before one sync.
KUBE_ROUTER_BATCH_SECONDS = 2
SKIP_IMAGE_GC = {"imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99}


def _run(cmd: list[str], check: bool = True, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise CkalabError(f"Real node setup: `{' '.join(cmd)}` failed: {(proc.stderr or proc.stdout).strip()[-800:]}")
    return proc


_MARK = f"{procs.COMPONENT_ENV}={COMPONENT_PREFIX}".encode()


def _marker(pid: int) -> tuple[str, str] | None:
    """(cluster directory, '<node>/<component>') of a live real-node process; None for others."""
    raw = procs.environ_bytes(pid)
    if not raw or _MARK not in raw:  # most processes: no need to decode their environment
        return None
    comp = procs.environ_value(raw, procs.COMPONENT_ENV) or ""
    if comp.startswith(COMPONENT_PREFIX) and procs.alive(pid):
        return procs.environ_value(raw, procs.CLUSTER_ENV) or "", comp[len(COMPONENT_PREFIX):]
    return None


class RealNodes:
    """The real nodes of one local cluster: controlplane (static-pod control plane) and node01."""

    def __init__(self, cluster) -> None:
        self.cluster = cluster
        self.root = cluster.dir / "nodes"
        h = hashlib.sha1(str(cluster.dir).encode()).hexdigest()
        self.tag = h[:6]
        self._first_octet = int(h[6:10], 16) % 200  # the subnet's third octet is 20 + this
        self.subnet = self._recorded_subnet() or self._subnet(0)
        self.bridge = f"ckb{self.tag}"

    # --- the bridge's subnet: from the cluster's directory, another when that one is taken ------
    def _subnet(self, step: int) -> ipaddress.IPv4Network:
        return ipaddress.ip_network(f"10.250.{(self._first_octet + step) % 200 + 20}.0/24")

    def _recorded_subnet(self) -> ipaddress.IPv4Network | None:
        try:
            return ipaddress.ip_network((self.root / "subnet").read_text().strip())
        except (OSError, ValueError):
            return None

    def _free_subnet(self) -> ipaddress.IPv4Network:
        """The first of this cluster's candidate subnets no route of this machine covers (two
        clusters whose directories hash alike, as parallel test sessions may, get different ones)."""
        for step in range(200):
            candidate = self._subnet(step)
            if not _run(["ip", "-4", "route", "show", str(candidate)], check=False).stdout.strip():
                return candidate
        raise CkalabError("No free /24 in 10.250.20.0-10.250.219.0 for the real nodes' bridge; see `ip route`.")

    # --- which nodes -----------------------------------------------------------------------------
    @property
    def _mode_file(self) -> Path:
        return self.root / "mode"

    def enabled(self) -> bool:
        """Real nodes stay on once asked for (until `ckalab up --nodes kwok`): kwok must not get
        node01 back while its kubelet still runs (the local backend reads CKALAB_NODES and the
        remembered mode, without importing this module)."""
        return self.cluster._real_mode()

    def names(self) -> tuple[str, ...]:
        return NODES if self.enabled() else ()

    def node(self, name: str) -> "Node":
        return Node(self, name, NODES.index(name))

    @property
    def control_plane(self) -> "Node":
        return self.node(CONTROL_PLANE)

    @property
    def workers(self) -> list["Node"]:
        return [self.node(n) for n in NODES if n != CONTROL_PLANE]

    @property
    def api_port(self) -> int:
        return int(self.cluster.load_state()["ports"]["apiserver"])

    @property
    def gateway(self) -> str:
        return str(self.subnet.network_address + 1)

    # --- lifecycle (driven by the local backend's `up`, which owns the order) --------------------
    def start_control_plane(self, progress) -> None:
        """The controlplane node: its kubelet starts the static pods from the manifests; the relay
        gives this machine the API server at 127.0.0.1:<api port>. Does not wait for the API."""
        self._check_host()  # before a build of minutes that could not be used
        bins = ensure_binaries(progress)
        self.root.mkdir(parents=True, exist_ok=True)
        self._bridge_up()
        self._registry_up()
        self.control_plane.up(bins, progress)
        self._relay_up()
        self._publish_lab_images(bins, progress)
        private_registry.for_nodes(self).resume()

    def start_workers(self, progress) -> bool:
        """node01 (the API server must answer); then real nodes stay on for later `up`s. True
        when a worker took over from kwok's stand-in."""
        bins = ensure_binaries(progress)
        took_over = False
        for node in self.workers:
            took_over |= node.up(bins, progress)
        home.write_atomic(self._mode_file, "real\n")
        return took_over

    def down(self, progress) -> None:
        """Stop and remove everything the real nodes started or created; safe to repeat."""
        if not self.root.exists():
            return
        for name in reversed(NODES):  # workers first, the control plane last
            self.node(name).down(progress)
        self._stop("relay")
        self._stop("registry")
        self._stop(private_registry.COMPONENT)
        _run(["ip", "link", "del", self.bridge], check=False)
        if not self.processes():
            for d in FIXED_DIRS:
                try:
                    os.rmdir(d)
                except OSError:
                    pass  # absent, or holds another runtime's files
        progress(f"Real nodes of '{self.cluster.name}' stopped and removed (bridge {self.bridge}).")

    def forget(self, progress) -> None:
        """`up --nodes kwok` after real nodes: stop them and forget the choice; the local backend
        then starts its control plane as processes and gives node01 back to kwok."""
        self.down(progress)
        self._mode_file.unlink(missing_ok=True)

    def remembered(self) -> bool:
        return self._mode_file.exists() and self._mode_file.read_text().strip() == "real"

    def adopt_control_plane(self, timeout: float = 120) -> bool:
        """What kubeadm's mark-control-plane phase does once the kubelet has registered the
        node: the control-plane label (a kubelet may not set node-role labels on itself). A kwok
        stand-in of the same name (from the process mode) loses kwok's annotation, so that kwok
        stops reporting for it. True when it was kwok's: kwok keeps renewing the leases of the
        nodes it once managed until it restarts."""
        from ..local import KWOK_ANNOTATION
        cp = self.control_plane
        cp.wait_ready(timeout)
        k = cp._kube()
        node = k.core.read_node(cp.name)
        patch: dict = {}
        if "node-role.kubernetes.io/control-plane" not in (node.metadata.labels or {}):
            patch.setdefault("metadata", {})["labels"] = {"node-role.kubernetes.io/control-plane": ""}
        if KWOK_ANNOTATION in (node.metadata.annotations or {}):
            patch.setdefault("metadata", {})["annotations"] = {KWOK_ANNOTATION: None}
        if patch:
            k.core.patch_node(cp.name, patch)
        for obj in KUBE_ROUTER_RBAC:
            k.apply(obj)
        cp.wait_kube_proxy()
        cp.start_kube_router(ensure_binaries(lambda m: None))
        return KWOK_ANNOTATION in (node.metadata.annotations or {})

    def running(self) -> bool:
        return bool(self.processes())

    def mark_watchers_stale(self) -> None:
        home.write_atomic(self.root / "watchers-stale", f"{time.time()}\n")

    def refresh_watchers(self) -> bool:
        """Each running node's kube-proxy and kube-router anew (Node.restart_watchers), if marked
        stale since they last started (True then)."""
        stale = self.root / "watchers-stale"
        if not stale.exists():
            return False
        stale.unlink()  # first: a restore that marks it again meanwhile is not lost
        for name in NODES:
            if self.processes().get(f"{name}/kubelet"):
                self.node(name).restart_watchers()
        return True

    def runs(self, component: str) -> bool:
        """Whether '<node>/<component>' runs: its recorded pid first, which spares `ckalab ssh`
        (called in loops by lab scripts) a scan of every process's environment."""
        return any(comp == component for comp, _ in self._spawned()) or bool(self.processes().get(component))

    def processes(self) -> dict[str, list[int]]:
        """'<node>/<component>' -> live pids with this cluster's real-node markers, and those
        recorded when spawned: a process in the middle of an exec (noclock -> nsenter -> kubelet)
        can show no environment for a moment, and a restart that missed it once left two kubelets
        on one node."""
        found: dict[str, list[int]] = {}
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                m = _marker(int(entry.name))
                if m and m[0] == str(self.cluster.dir):
                    found.setdefault(m[1], []).append(int(entry.name))
        for comp, pid in self._spawned():
            if pid not in found.get(comp, []):
                found.setdefault(comp, []).append(pid)
        return found

    def main_pids(self, component: str) -> list[int]:
        """The processes of '<node>/<component>' that no other of them started: what a component
        runs (kube-router's iptables, for one) inherits its marker while it lasts."""
        pids = self.processes().get(component, [])
        return [pid for pid in pids if procs.parent(pid) not in pids]

    def _spawned(self) -> list[tuple[str, int]]:
        """(component, pid) of the recorded processes that still run; the records of the others go."""
        live = []
        try:
            entries = list(os.scandir(self.root / "pids"))
        except OSError:
            return []
        for entry in entries:
            if not entry.name.isdigit():
                continue  # a record being written
            try:
                started, comp = Path(entry.path).read_text().split(maxsplit=1)
            except (OSError, ValueError):
                continue
            pid = int(entry.name)
            if procs.start_time(pid) == started and procs.alive(pid):
                live.append((comp.strip(), pid))
            else:
                Path(entry.path).unlink(missing_ok=True)
        return live

    # --- shared pieces ---------------------------------------------------------------------------
    def _check_host(self) -> None:
        longest = max((self.node(n).sock for n in NODES), key=lambda p: len(str(p)))
        inside = [d for d in OVERLAID if Path(self.root).resolve().is_relative_to(d)]
        if inside:
            raise CkalabError(f"Real nodes overlay {inside[0]} in their own mount namespace, so the "
                              f"cluster cannot live under it ({self.root}): use a CKALAB_HOME elsewhere.")
        if len(str(longest)) + len(".ttrpc") > 107:  # sun_path holds 108 bytes with its NUL
            raise CkalabError(f"The real node's socket path {longest} is too long for a unix socket: "
                              "use a shorter CKALAB_HOME.")
        missing = [t for t in ("ip", "nsenter", "unshare", "mount", "umount", "iptables", "iptables-save")
                   if not shutil.which(t)]
        missing += [f"{t} (apt-get install {t})" for t in ("ipset", "docker-registry") if not shutil.which(t)]
        if not any(Path(d, "bridge").exists() for d in CNI_BIN_DIRS):
            missing.append("CNI plugins (apt-get install containernetworking-plugins)")
        if os.geteuid() != 0:
            raise CkalabError("Real nodes need root (network namespaces, mounts, cgroups).")
        if missing:
            raise CkalabError(f"Real nodes need: {', '.join(missing)}.")

    def _bridge_up(self) -> None:
        # Under a machine-wide lock, up and routed before it ends: clusters starting at once must
        # not both find one subnet unrouted.
        with home.locked(home.machine_dir() / "bridges.lock", f"adding bridge {self.bridge}", timeout=60):
            self._add_bridge()
            _run(["ip", "link", "set", self.bridge, "up"])

    def _add_bridge(self) -> None:
        if _run(["ip", "link", "show", self.bridge], check=False).returncode != 0:
            clash = _run(["ip", "-4", "route", "show", str(self.subnet)], check=False).stdout.strip()
            if clash and (self.root / CONTROL_PLANE).exists():  # its node files name these addresses
                raise CkalabError(f"Subnet {self.subnet} for the real nodes' bridge is already routed "
                                  f"on this machine ({clash}); see `ip route`.")
            if clash:  # nodes not made yet: take another subnet, and keep it
                self.subnet = self._free_subnet()
                self.root.mkdir(parents=True, exist_ok=True)
                home.write_atomic(self.root / "subnet", f"{self.subnet}\n")
            _run(["ip", "link", "add", "name", self.bridge, "type", "bridge"])
            _run(["ip", "addr", "add", f"{self.gateway}/{self.subnet.prefixlen}", "dev", self.bridge])

    def _relay_up(self) -> None:
        """The API server listens in the controlplane's namespace; every kubeconfig on this
        machine names https://127.0.0.1:<api port>, so a relay carries that port to it (TLS
        passes through untouched)."""
        port = self.api_port
        if self.processes().get("relay"):
            return
        self.spawn("relay", [sys.executable, str(HERE / "proxy.py"), f"127.0.0.1:{port}",
                             f"{self.control_plane.ip}:{port}"], self.root / "relay.log")
        wait_for(lambda: _listening("127.0.0.1", port), 10, "the API relay on 127.0.0.1")

    @property
    def registry(self) -> str:
        return f"{self.gateway}:{REGISTRY_PORT}"

    def _registry_up(self) -> None:
        if self.processes().get("registry"):
            return
        binary = shutil.which("docker-registry") or shutil.which("registry")
        if not binary:
            raise CkalabError("Real nodes serve the labs' images from Debian's docker-registry: "
                              "apt-get install docker-registry.")
        d = self.root / "registry"
        (d / "data").mkdir(parents=True, exist_ok=True)
        config = {"version": 0.1, "log": {"level": "warn"},
                  "storage": {"filesystem": {"rootdirectory": str(d / "data")}},
                  "http": {"addr": self.registry}}
        home.write_atomic(d / "config.yml", yaml.safe_dump(config, sort_keys=False))
        self.spawn("registry", [binary, "serve", str(d / "config.yml")], d / "registry.log")
        wait_for(lambda: _listening(self.gateway, REGISTRY_PORT), 20, "the cluster's image registry")

    def _published(self, repo: str) -> str | None:
        """The manifest digest the registry holds for `repo` (name:tag), or None."""
        import urllib.request
        name, tag = repo.rsplit(":", 1)
        req = urllib.request.Request(f"http://{self.registry}/v2/{name}/manifests/{tag}", method="HEAD",
                                     headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.headers.get("Docker-Content-Digest")
        except OSError:
            return None

    def _publish_lab_images(self, bins, progress) -> None:
        """Push the labs' images (built here, images.lab_images) into the cluster's registry
        when it does not hold them yet, or holds an older build."""
        cp = self.control_plane
        inputs = [p.stat().st_mtime for p in images.lab_image_inputs(bins) if p.exists()]
        for repo, make in images.lab_images(bins).items():
            archive = self.root / "registry" / "archives" / (repo.replace("/", "_").replace(":", "_") + ".tar")
            archive.parent.mkdir(parents=True, exist_ok=True)
            if not archive.exists() or archive.stat().st_mtime < max(inputs):
                make(archive)
            if self._published(repo) == images.manifest_digest(archive):
                continue
            t = time.monotonic()
            name = images.upstream_name(repo)
            target = f"{self.registry}/{repo}"
            for args in (("images", "import", "--snapshotter", "overlayfs", str(archive)),
                         ("images", "tag", "--force", name, target),
                         ("images", "push", "--plain-http", target)):
                proc = cp._ctr(bins, *args, timeout=300)
                if proc.returncode != 0:
                    raise CkalabError(f"Publishing {name} to the cluster's registry failed at `ctr {' '.join(args[:2])}`: "
                                      f"{proc.stderr.strip()[-500:]}")
            cp._ctr(bins, "images", "rm", target)
            progress(f"  published {name} to the cluster's registry in {time.monotonic() - t:.1f}s")

    def spawn(self, comp: str, argv: list[str], log: Path) -> int:
        log.parent.mkdir(parents=True, exist_ok=True)
        env = procs.marker_env(self.cluster.dir, COMPONENT_PREFIX + comp)
        with open(log, "ab") as out:
            p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env=env, cwd=self.root, start_new_session=True)
        started = procs.start_time(p.pid)
        if started:  # see processes(); the pid stays the same through the execs that follow
            record = self.root / "pids" / str(p.pid)
            record.parent.mkdir(parents=True, exist_ok=True)
            home.write_atomic(record, f"{started} {comp}\n")
        return p.pid

    def _stop(self, comp: str, timeout: float = 20.0) -> None:
        stop_pids(self.processes().get(comp, []), timeout)


def stop_pids(pids: list[int], timeout: float = 20.0) -> None:
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        try:
            wait_for(lambda: not any(procs.alive(p) for p in pids), wait, "processes to stop", interval=0.1)
            return
        except WaitTimeout:
            continue


class Node:
    """One real node: its network namespace, mount namespace, containerd, kubelet and pods."""

    def __init__(self, nodes: RealNodes, name: str, index: int) -> None:
        self.nodes, self.name, self.index = nodes, name, index
        self.dir = nodes.root / name
        self.netns = f"ckalab-{nodes.tag}-{name}"
        self.veth = f"ckv{nodes.tag}{index:02d}"
        self.ip = str(nodes.subnet.network_address + 10 + index)
        self.pod_subnet = f"10.245.{index}.0/24"
        self.is_control_plane = name == CONTROL_PLANE
        self.cgroup_root = f"/ckalab-{nodes.tag}-{name}"
        self.mntns = self.dir / "run" / "mntns"
        self.sock = self.dir / "run" / "containerd" / "containerd.sock"
        self.started: dict[str, int] = {}  # component -> pid, started by this `up`

    # --- paths -----------------------------------------------------------------------------------
    def p(self, rel: str) -> Path:
        return self.dir / rel

    @property
    def cluster_pki(self) -> Path:
        return self.nodes.cluster.etc / "pki"

    @property
    def etc_kubernetes(self) -> Path:
        """What the node sees as /etc/kubernetes: the cluster's own on the controlplane (pki,
        kubeconfigs, the static pod manifests), a worker's own directory elsewhere."""
        return self.nodes.cluster.etc if self.is_control_plane else self.p("etc/kubernetes")

    def binds(self) -> dict[str, Path]:
        """Path on the node -> directory on this machine."""
        out = {"/etc/kubernetes": self.etc_kubernetes, "/var/lib/kubelet": self.p("var/lib/kubelet"),
               "/var/log/pods": self.p("var/log/pods"), "/var/lib/kube-proxy": self.p("var/lib/kube-proxy"),
               "/var/lib/kube-router": self.p("var/lib/kube-router")}
        if self.is_control_plane:
            out["/var/lib/etcd"] = self.nodes.cluster.dir / "var/lib/etcd"
            out["/var/log/kubernetes/audit"] = self.nodes.cluster.dir / "logs"  # logs/audit.log, as before
        return out

    # --- up --------------------------------------------------------------------------------------
    def up(self, bins: dict[str, Path], progress) -> bool:
        """Start the node; True when it replaced kwok's stand-in of the same name."""
        procs_now = self.nodes.processes()
        if procs_now.get(f"{self.name}/kubelet") and procs_now.get(f"{self.name}/containerd"):
            if not procs_now.get(f"{self.name}/kube-proxy"):
                self._start_kube_proxy(bins)
            if not self.is_control_plane:
                self.start_kube_router(bins)
            progress(f"Real node {self.name} is already running (kubelet, containerd, kube-proxy).")
            return False
        self.down(lambda m: None)  # leftovers of a crash: start from a clean slate
        start = time.monotonic()
        progress(f"Starting real node {self.name} ({self.ip}, netns {self.netns}): containerd, kubelet ...")
        for sub in ("etc/containerd", "etc/cni/net.d", "etc/sysctl", "run", "var/lib/containerd",
                    "var/lib/kubelet/pki", "var/lib/kube-proxy", "var/lib/kube-router", "var/log/pods",
                    "images", "logs", "bin"):
            self.p(sub).mkdir(parents=True, exist_ok=True)
        for d in self.binds().values():
            d.mkdir(parents=True, exist_ok=True)
        (self.etc_kubernetes / "manifests").mkdir(exist_ok=True)
        self._network()
        self._mount_namespace()
        self._cgroups()
        self._write_pki()
        self._write_configs(bins)
        self._tools(bins)
        self._start("containerd", [str(bins["containerd"]), "--config", str(self.p("etc/containerd/config.toml"))])
        self._wait(lambda: self.sock.exists() and self._ctr(bins, "version").returncode == 0, 60, "containerd")
        self._import_images(bins, progress)
        took_over = False if self.is_control_plane else self._forget_kwok_node()
        self.start_kubelet(bins)
        self._start_kube_proxy(bins)
        if self.is_control_plane:
            # The kubelet now starts the static pods; the API server answers some seconds later
            # (the local backend waits for it, then for this node).
            progress(f"  real node {self.name}: kubelet started after {time.monotonic() - start:.1f}s; "
                     "it starts etcd, kube-apiserver, kube-controller-manager and kube-scheduler")
            return False
        self.wait_ready()
        self.wait_kube_proxy()
        self.start_kube_router(bins)
        progress(f"  real node {self.name} Ready after {time.monotonic() - start:.1f}s")
        return took_over

    def _start_kube_proxy(self, bins: dict[str, Path]) -> None:
        """kube-proxy (iptables mode) in the node's namespaces: Services, the API server's
        10.96.0.1 included, work for the node's pods."""
        self._start("kube-proxy", [str(bins["kube-proxy"]), "--config=/var/lib/kube-proxy/config.conf",
                                   f"--hostname-override={self.name}"])

    def wait_kube_proxy(self, timeout: float = 60) -> None:
        """Until kube-proxy has written the rules of the API server's Service (its healthz says
        healthy before its first sync): a pod that calls it right after `up` must not find it
        unreachable.

        A kube-proxy that lived through a broken API server (a lab's fault: another CA, no RBAC)
        retries its watches with client-go's back-off, up to a minute between tries, and was
        seen writing nothing for over a minute after the API server was fixed: after half of
        `timeout` it is restarted (as `systemctl restart kube-proxy` would) and gets all of it."""
        def synced() -> bool:
            nat = _run(["nsenter", f"--net=/run/netns/{self.netns}", "--", "iptables-save", "-t", "nat"],
                       check=False).stdout
            return any(f"-d {KUBERNETES_SERVICE_IP}/32" in line and "KUBE-SVC-" in line for line in nat.splitlines())
        what = f"kube-proxy on {self.name} to write the rules of the 'kubernetes' Service"
        try:
            wait_for(synced, timeout / 2, what)
            return
        except WaitTimeout:
            stop_pids(self.nodes.processes().get(f"{self.name}/kube-proxy", []), timeout=5)
            self._start_kube_proxy(ensure_binaries(lambda m: None))
        self._wait(synced, timeout, what, log="kube-proxy")

    def start_kube_router(self, bins: dict[str, Path]) -> None:
        """kube-router's network policy controller only (no routing, no service proxy, no CNI):
        it needs the node's Node object, so it starts once the node is Ready. Our build asks for
        one iptables sync KUBE_ROUTER_BATCH_SECONDS after the first of a burst of pod changes,
        rather than one per change (gomod/kube-router/kube-router/main.go)."""
        if self.nodes.processes().get(f"{self.name}/kube-router"):
            return
        self._start("kube-router", [str(bins["kube-router"]), "--run-firewall=true", "--run-router=false",
                                    "--run-service-proxy=false", "--enable-cni=false", "--enable-ipv6=false",
                                    "--kubeconfig=/var/lib/kube-router/kubeconfig",
                                    f"--hostname-override={self.name}", "--health-port=0", "--metrics-port=0",
                                    f"--service-cluster-ip-range={kpki.SERVICE_CIDR}",
                                    f"--event-batch-period={KUBE_ROUTER_BATCH_SECONDS:g}s"])

    def restart_watchers(self) -> None:
        """Restart this node's kube-proxy and kube-router (as `systemctl restart` would) after
        the API server or etcd was replaced. Their watches failed while it was down and retry
        with client-go's back-off: a kube-router seen in that back-off (CI on aea4031) did not
        enforce a NetworkPolicy stored 30 s after the API server was back. New ones list and
        watch at once (kube-proxy's rules stay in place meanwhile)."""
        found = self.nodes.processes()
        bins = ensure_binaries(lambda m: None)
        for comp in ("kube-router", "kube-proxy"):
            stop_pids(found.get(f"{self.name}/{comp}", []), timeout=5)
        self._start_kube_proxy(bins)
        if found.get(f"{self.name}/kube-router"):  # started once the node was Ready; not before
            self.start_kube_router(bins)

    def start_kubelet(self, bins: dict[str, Path]) -> None:
        self.since = time.time() - 1
        self._start("kubelet", [str(bins["kubelet"]), *self._kubelet_flags()])

    def restore_kubelet_config(self) -> str | None:
        """ckalab's /var/lib/kubelet/config.yaml back (a learner's edit kept aside in
        <cluster>/kubelet-config.edited/) and the kubelet restarted with it; None when unchanged."""
        path, orig = self.p("var/lib/kubelet/config.yaml"), self.p("kubelet-config.orig.yaml")
        try:
            now, want = path.read_bytes() if path.exists() else None, orig.read_bytes()
        except FileNotFoundError:
            return None  # a node that never ran: nothing of ckalab's to restore
        if now == want:
            if self.nodes.processes().get(f"{self.name}/containerd") and \
                    not self.nodes.processes().get(f"{self.name}/kubelet"):
                self.start_kubelet(ensure_binaries(lambda m: None))  # stopped by hand (systemctl stop)
                self.wait_ready(60)
                return f"{self.name}: its stopped kubelet started again"
            return None
        said = f"{self.name}: /var/lib/kubelet/config.yaml restored"
        if now is not None:
            aside = self.nodes.cluster.dir / "kubelet-config.edited" / f"{self.name}.{time.strftime('%Y%m%d-%H%M%S')}.yaml"
            aside.parent.mkdir(exist_ok=True)
            aside.write_bytes(now)
            said += f"; your version is kept in {aside}"
        home.write_atomic(path, want)
        if self.nodes.processes().get(f"{self.name}/containerd"):
            stop_pids(self.nodes.processes().get(f"{self.name}/kubelet", []))
            self.start_kubelet(ensure_binaries(lambda m: None))
            self.wait_ready(60)
        return said

    def shell(self, command: list[str] | None = None) -> tuple[list[str], dict[str, str]]:
        """argv and environment of a root shell on this node: its mount and network namespaces
        (the exam's paths, the node's address), its own hostname, crictl/kubeadm/kubectl (and
        etcdctl on the controlplane) on PATH, under the clock filter like everything else here."""
        if not self.nodes.runs(f"{self.name}/containerd"):
            raise CkalabError(f"Real node {self.name} of cluster '{self.nodes.cluster.name}' is not running: "
                              f"run '{_up_command(self.nodes.cluster.name)}'.")
        env = {"PATH": f"{self.p('bin')}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "HOME": "/root", "TERM": os.environ.get("TERM", "xterm"),
               "PS1": f"root@{self.name}:\\w# ", "CONTAINER_RUNTIME_ENDPOINT": f"unix://{self.sock}"}
        if self.is_control_plane:
            env["KUBECONFIG"] = "/etc/kubernetes/admin.conf"
        shell = shutil.which("bash") or "/bin/sh"
        inner = command or [shell, "--norc", "-i"]
        argv = [sys.executable, str(HERE / "noclock.py"), "nsenter", f"--mount={self.mntns}",
                f"--net=/run/netns/{self.netns}", "--", "unshare", "--uts", "--", "sh", "-c",
                f'hostname {self.name} && cd /root 2>/dev/null; exec "$@"', "sh", *inner]
        return argv, env

    def wait_ready(self, timeout: float = 120) -> None:
        since = getattr(self, "since", 0.0)  # a kubelet started by an earlier `up`: any heartbeat
        self._wait(lambda: self._ready(since), timeout, f"node {self.name} to be Ready")

    def dead_components(self) -> list[str]:
        """This node's kubelet or containerd, started by this `up`, that exited since."""
        return [f"{self.name}/{c}" for c, pid in self.started.items() if not procs.alive(pid)]

    def crictl(self, *args: str, timeout: float = 20) -> subprocess.CompletedProcess:
        """crictl inside the node's mount namespace, where the paths it reports (pod logs) exist."""
        crictl = build.group_dir("cri-tools") / "crictl"
        if not self.sock.exists() or not crictl.exists() or not self.mntns.exists():
            return subprocess.CompletedProcess([], 1, "", f"node {self.name} is not running")
        return _run(["nsenter", f"--mount={self.mntns}", "--", str(crictl), "--runtime-endpoint",
                     f"unix://{self.sock}", "--timeout", "5s", *args], check=False, timeout=timeout)

    def containers(self) -> list[dict]:
        """The node's containers as crictl sees them (newest first); [] when it cannot answer."""
        proc = self.crictl("ps", "-a", "-o", "json")
        try:
            found = json.loads(proc.stdout).get("containers", [])
        except ValueError:
            return []
        return sorted(found, key=lambda c: int(c.get("createdAt", 0)), reverse=True)

    def running_command(self, name: str) -> list[str] | None:
        """The command line (command + args) the node's running container `name` was started
        with, as the runtime has it; None when no such container runs."""
        running = [c["id"] for c in self.containers()
                   if c.get("metadata", {}).get("name") == name and c.get("state") == "CONTAINER_RUNNING"]
        if len(running) != 1:  # none, or the old one still stopping beside the new one
            return None
        try:
            config = json.loads(self.crictl("inspect", running[0]).stdout)["info"]["config"]
        except (ValueError, KeyError, TypeError):
            return None
        return [*(config.get("command") or []), *(config.get("args") or [])]

    def forget_static_pods(self, containers: list[str], timeout: float = 60) -> None:
        """Wait until this node's kubelet has let go of the static pods running `containers`,
        whose manifests were just removed, so that a manifest written next starts at once.

        A manifest replaced in place waits longer: the kubelet starts no second static pod of
        one name while it still knows the first, and retries only after its 10-15 s back-off.
        Its pod directory (pods/<uid>/containers/<name>) goes in one housekeeping pass, the pod
        worker, which holds the name, in the same pass or the next (released(), below)."""
        if not self.nodes.processes().get(f"{self.name}/kubelet"):
            return  # no kubelet runs them: the next one starts from the manifests as they are
        pods = self.p("var/lib/kubelet/pods")
        gone_at: list[float] = []

        def manifests_left() -> int:  # the kubelet's file source skips names starting with "."
            folder = self.etc_kubernetes / "manifests"
            return sum(1 for m in folder.iterdir() if m.is_file() and not m.name.startswith("."))

        def gone() -> bool:
            try:
                return not any((d / "containers" / c).exists() for d in pods.iterdir() for c in containers)
            except OSError:
                return True

        def released() -> bool:
            # The pod directory goes in one housekeeping pass, the pod worker (and with it the
            # static pod's name) in the same pass or the next; a manifest written before the name
            # is free waits out the kubelet's 10-15 s back-off. The kubelet's working-pods gauge
            # tells, as of a pass that saw the removal (no more desired static pods than there
            # are manifests left): none orphaned means the name is free. Unreadable metrics (no
            # kubelet client certificate, the kubelet restarting): one housekeeping period.
            if not gone():
                return False
            now = time.monotonic()
            gone_at.append(now)
            workers = self.static_pod_workers()
            if workers is not None and workers[1] == 0 and workers[0] <= manifests_left():
                return True
            return now - gone_at[0] >= KUBELET_HOUSEKEEPING_SECONDS
        what = f"the kubelet to stop {', '.join(containers)}"
        if "etcd" not in containers:
            self._wait(released, timeout, what, log="kubelet", cap=0.2)  # the release is seen at once
        else:
            self._wait(gone, timeout, what, log="kubelet")
            # Without etcd the API server cannot delete the old etcd pod's mirror pod, and the
            # kubelet's loop waits on that request (measured: 35 s before it started the new etcd,
            # "Failed deleting a mirror pod ... Timeout"). A kubelet started now has not listed
            # the mirror pods yet: it starts the new manifest at once and fixes the mirror pod
            # once the API server answers again. The static pods' containers keep running.
            stop_pids(self.nodes.processes().get(f"{self.name}/kubelet", []))
            self.start_kubelet(ensure_binaries(lambda m: None))

    def static_pod_workers(self) -> tuple[int, int] | None:
        """The static pods this node's kubelet keeps pod workers for, (desired, orphaned: their
        manifest removed), as its /metrics counted them at the last housekeeping pass. Read the
        way the API server reaches kubelets (the apiserver-kubelet-client certificate, the
        cluster CA for the kubelet's serving certificate); None when it cannot be read."""
        import ssl
        import urllib.request

        pki = self.cluster_pki
        try:
            ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
            ctx.load_cert_chain(str(pki / "apiserver-kubelet-client.crt"), str(pki / "apiserver-kubelet-client.key"))
            with urllib.request.urlopen(f"https://{self.ip}:10250/metrics", context=ctx, timeout=2) as r:
                body = r.read().decode(errors="replace")
        except (OSError, ValueError, ssl.SSLError):
            return None
        counts = {"desired": 0, "orphan": 0}
        found = False
        for line in body.splitlines():
            if line.startswith(WORKING_PODS_METRIC) and 'static="true"' in line:
                found = True
                for config in counts:
                    if f'config="{config}"' in line:
                        counts[config] += int(float(line.rsplit(" ", 1)[1]))
        return (counts["desired"], counts["orphan"]) if found else None

    def container_logs(self, container_id: str, lines: int = 10) -> list[str]:
        proc = self.crictl("logs", "--tail", str(lines), container_id)
        return (proc.stdout + proc.stderr).splitlines()[-lines:]

    def _wait(self, predicate, timeout: float, what: str, log: str | None = None, interval: float = 0.2,
              cap: float = BACKOFF_CAP) -> None:
        """Until predicate() is truthy; a component this `up` started that exits, or the
        timeout, is an error naming the logs (with the last lines of `log`'s, the one that
        should have done it)."""
        def step():
            # By pid, not by marker: a process in the middle of an exec (noclock -> nsenter ->
            # containerd) can briefly show no environment at all.
            for comp, pid in self.started.items():
                if not procs.alive(pid):
                    return ("exited", comp)
            return predicate()

        try:
            got = wait_for(step, timeout, what, interval=interval, cap=cap)
        except WaitTimeout:
            last = ""
            if log:
                try:
                    lines = self.p(f"logs/{log}.log").read_text(errors="replace").splitlines()[-8:]
                    last = f"\nThe last lines of {log}'s log:\n" + "\n".join(f"  {line[:300]}" for line in lines)
                except OSError:
                    pass
            raise CkalabError(f"Real node {self.name}: timed out waiting for {what}; logs in {self.p('logs')}"
                              + last) from None
        if isinstance(got, tuple) and got[0] == "exited":
            tail = self.p(f"logs/{got[1]}.log").read_text(errors="replace").splitlines()[-15:]
            hint = ""
            if any("too many open files" in line for line in tail):
                # Each kubelet, containerd and controller manager holds inotify instances, and
                # the default limit (128 per user) is shared by every cluster of this machine.
                limit = Path("/proc/sys/fs/inotify/max_user_instances").read_text().strip()
                hint = (f"\nThe inotify instances of this user are used up (fs.inotify.max_user_instances = "
                        f"{limit}): stop other clusters ('ckalab down'), or raise the limit "
                        "(sysctl fs.inotify.max_user_instances=512), as kind's documentation advises too.")
            raise CkalabError(f"Real node {self.name}: {got[1]} exited while waiting for {what}:\n  "
                              + "\n  ".join(tail) + hint)

    def _network(self) -> None:
        """The node's own network namespace, joined to the project's bridge by a veth pair."""
        _run(["ip", "netns", "add", self.netns])
        _run(["ip", "link", "add", self.veth, "type", "veth", "peer", "name", f"{self.veth}p"])
        _run(["ip", "link", "set", self.veth, "master", self.nodes.bridge, "up"])
        _run(["ip", "link", "set", f"{self.veth}p", "netns", self.netns])
        inside = ["ip", "netns", "exec", self.netns, "ip"]
        _run([*inside, "link", "set", f"{self.veth}p", "name", "eth0"])
        _run([*inside, "addr", "add", f"{self.ip}/{self.nodes.subnet.prefixlen}", "dev", "eth0"])
        _run([*inside, "link", "set", "eth0", "up"])
        _run([*inside, "link", "set", "lo", "up"])
        # Pods of one node reach the others' (and the API server's replies reach a pod that
        # called it through its Service): a route per other node's pod subnet, and forwarding
        # in this namespace (its own setting, not the machine's).
        # Bridged pod-to-pod packets pass iptables too, where kube-router enforces NetworkPolicy.
        _run(["nsenter", f"--net=/run/netns/{self.netns}", "--", "sysctl", "-qw", "net.ipv4.ip_forward=1",
              "net.bridge.bridge-nf-call-iptables=1"])
        for other in NODES:
            if other != self.name:
                peer = self.nodes.node(other)
                _run([*inside, "route", "replace", peer.pod_subnet, "via", peer.ip])
        # No default route, on purpose: the node talks to the bridge's subnet only (the relay,
        # the API server's calls to the kubelet), and a pod's packet for any other address dies
        # here instead of reaching the host, which could forward it off the machine.

    def _mount_namespace(self) -> None:
        """A mount namespace for containerd, kubelet and the pods, pinned by a bind mount of its
        file: the kubelet's kernel settings masked (see _SYSCTL_MASKS), overlays on /etc,
        /var/lib and /var/log written into the node's directory, and the exam's paths
        bound into them (binds())."""
        self.mntns.touch()
        _run(["unshare", f"--mount={self.mntns}", "--propagation", "private", "true"])
        inside = ["nsenter", f"--mount={self.mntns}", "--"]
        for key, value in _SYSCTL_MASKS.items():
            f = self.p(f"etc/sysctl/{key.replace('/', '.')}")
            f.write_text(value + "\n")
            _run([*inside, "mount", "--bind", "-o", "ro", str(f), f"/proc/sys/{key}"])
        for d in OVERLAID:
            layer = self.p("overlay" + d)
            (layer / "upper").mkdir(parents=True, exist_ok=True)
            shutil.rmtree(layer / "work", ignore_errors=True)  # overlayfs wants it empty
            (layer / "work").mkdir()
            _run([*inside, "mount", "-t", "overlay", "overlay", "-o",
                  f"lowerdir={d},upperdir={layer / 'upper'},workdir={layer / 'work'}", d])
        for target, source in self.binds().items():
            _run([*inside, "mkdir", "-p", target])
            _run([*inside, "mount", "--bind", str(source), target])

    def _cgroups(self) -> None:
        """The kubelet's --cgroup-root must exist in every hierarchy before it starts."""
        for h in _hierarchies():
            d = h / self.cgroup_root.lstrip("/")
            d.mkdir(exist_ok=True)
            for f in ("cpuset.cpus", "cpuset.mems"):  # v1 cpuset: empty until copied; no task could join
                if (h / f).exists() and not (d / f).read_text().strip():
                    (d / f).write_text((h / f).read_text())

    def _write_pki(self) -> None:
        """The kubelet's client certificate (system:node:<name>, kubeadm's kubelet.conf) and its
        serving certificate, both signed by the cluster CA, under /var/lib/kubelet/pki."""
        pki = kpki.pki  # loaded here: `ckalab ssh` and `node-file` need no `cryptography`
        ca_key = pki.load_key(self.cluster_pki / "ca.key")
        ca_cert = pki.load_cert(self.cluster_pki / "ca.crt")
        cn = f"system:node:{self.name}"
        kpki_dir = self.p("var/lib/kubelet/pki")
        if not (kpki_dir / "kubelet-client.crt").exists():
            key, cert = pki.sign(ca_key, ca_cert, cn, orgs=("system:nodes",), usages=(pki.CLIENT_AUTH,))
            pki.write_pair(kpki_dir, "kubelet-client", key, cert)
        if not (kpki_dir / "kubelet.crt").exists():
            key, cert = pki.sign(ca_key, ca_cert, cn, orgs=("system:nodes",), usages=(pki.SERVER_AUTH,),
                                 dns=(self.name,), ips=(self.ip,))
            pki.write_pair(kpki_dir, "kubelet", key, cert)
        if not self.is_control_plane:  # the controlplane sees the cluster's own pki
            (self.etc_kubernetes / "pki").mkdir(parents=True, exist_ok=True)
            home.write_atomic(self.etc_kubernetes / "pki/ca.crt", pki.cert_pem(ca_cert))
        port = self.nodes.api_port
        # The controlplane reaches its API server on its own loopback, a worker over the bridge;
        # the API server's certificate names 127.0.0.1 and 'kubernetes', not the node address.
        server = (f"https://127.0.0.1:{port}" if self.is_control_plane
                  else f"https://{self.nodes.control_plane.ip}:{port}")
        conf = kpki.kubeconfig_dict(server, pki.cert_pem(ca_cert), cn,
                                    (kpki_dir / "kubelet-client.crt").read_bytes(),
                                    (kpki_dir / "kubelet-client.key").read_bytes())
        if not self.is_control_plane:
            conf["clusters"][0]["cluster"]["tls-server-name"] = "kubernetes"
        home.write_atomic(self.etc_kubernetes / "kubelet.conf", yaml.safe_dump(conf, sort_keys=False), private=True)
        # kube-proxy as user system:kube-proxy, whom the bootstrap ClusterRoleBinding
        # system:node-proxier authorizes (kubeadm uses a ServiceAccount; a certificate needs no
        # API server to exist first).
        proxy_dir = self.p("var/lib/kube-proxy")
        if not (proxy_dir / "kube-proxy.crt").exists():
            key, cert = pki.sign(ca_key, ca_cert, "system:kube-proxy", usages=(pki.CLIENT_AUTH,))
            pki.write_pair(proxy_dir, "kube-proxy", key, cert)
        proxy_conf = kpki.kubeconfig_dict(server, pki.cert_pem(ca_cert), "system:kube-proxy",
                                          (proxy_dir / "kube-proxy.crt").read_bytes(),
                                          (proxy_dir / "kube-proxy.key").read_bytes())
        if not self.is_control_plane:
            proxy_conf["clusters"][0]["cluster"]["tls-server-name"] = "kubernetes"
        home.write_atomic(proxy_dir / "kubeconfig.conf", yaml.safe_dump(proxy_conf, sort_keys=False), private=True)
        router_dir = self.p("var/lib/kube-router")
        if not (router_dir / "kube-router.crt").exists():
            key, cert = pki.sign(ca_key, ca_cert, KUBE_ROUTER_USER, usages=(pki.CLIENT_AUTH,))
            pki.write_pair(router_dir, "kube-router", key, cert)
        router_conf = kpki.kubeconfig_dict(server, pki.cert_pem(ca_cert), KUBE_ROUTER_USER,
                                           (router_dir / "kube-router.crt").read_bytes(),
                                           (router_dir / "kube-router.key").read_bytes())
        if not self.is_control_plane:
            router_conf["clusters"][0]["cluster"]["tls-server-name"] = "kubernetes"
        home.write_atomic(router_dir / "kubeconfig", yaml.safe_dump(router_conf, sort_keys=False), private=True)

    def _write_configs(self, bins: dict[str, Path]) -> None:
        cni_bins = [d for d in CNI_BIN_DIRS if Path(d, "bridge").exists()]
        cri = "plugins.'io.containerd.cri.v1.runtime'"
        toml = f"""# Written by ckalab for real node {self.name}; every path is inside {self.dir}.
version = 3
root = "{self.p('var/lib/containerd')}"
state = "{self.p('run/containerd')}"
# Plugins that would write outside the node's directory (/opt/containerd, /var/run/nri) or that
# need filesystems we do not use.
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.nri.v1.nri",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.blockfile",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{self.sock}"

[{cri}]
  # root here lacks CAP_SYS_RESOURCE: without this runc fails to lower oom_score_adj.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [{cri}.containerd]
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        BinaryName = "{bins['runc']}"
        Root = "{self.p('run/runc')}"
        SystemdCgroup = false
  [{cri}.cni]
    bin_dirs = {json.dumps(cni_bins)}
    conf_dir = "{self.p('etc/cni/net.d')}"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = "{self.p('etc/containerd/certs.d')}"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "{images.PAUSE_IMAGE}"
"""
        home.write_atomic(self.p("etc/containerd/config.toml"), toml)
        for upstream in MIRRORED:  # only the cluster's registry: no fallback to the internet
            home.write_atomic(self.p(f"etc/containerd/certs.d/{upstream}/hosts.toml"),
                              f'server = "http://{self.nodes.registry}"\n\n'
                              f'[host."http://{self.nodes.registry}"]\n  capabilities = ["pull", "resolve"]\n')
        cni = {"cniVersion": "1.0.0", "name": "ckalab", "plugins": [{
            "type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": False, "hairpinMode": True,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": self.pod_subnet}]],
                     "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(self.p("var/lib/cni/networks"))}}]}
        home.write_atomic(self.p("etc/cni/net.d/10-ckalab.conflist"), json.dumps(cni, indent=2))
        kubelet = {
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "address": self.ip, "port": 10250, "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1", "healthzPort": 10248,
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                               "x509": {"clientCAFile": "/etc/kubernetes/pki/ca.crt"}},
            "authorization": {"mode": "Webhook"},
            "tlsCertFile": "/var/lib/kubelet/pki/kubelet.crt",
            "tlsPrivateKeyFile": "/var/lib/kubelet/pki/kubelet.key",
            # This machine: cgroup v1 (deprecated upstream, refused unless allowed) without systemd.
            "failCgroupV1": False, "cgroupDriver": "cgroupfs", "cgroupRoot": self.cgroup_root,
            "containerRuntimeEndpoint": f"unix://{self.sock}",
            "staticPodPath": "/etc/kubernetes/manifests",
            "podLogsDir": "/var/log/pods",
            "clusterDomain": "cluster.local", "clusterDNS": ["10.96.0.10"],
            "failSwapOn": False, "maxPods": 30,
            # A shared laptop disk must not make the node evict lab pods or delete our images.
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%",
                             "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
            **SKIP_IMAGE_GC,
        }
        if self.is_control_plane:
            # A mirror pod refused while the API server was still starting (no PriorityClass
            # yet) is retried at the next sync: 10 s instead of a minute.
            kubelet["syncFrequency"] = "10s"
            kubelet["registerWithTaints"] = [{"key": "node-role.kubernetes.io/control-plane",
                                              "effect": "NoSchedule"}]
        proxy = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
            "mode": "iptables", "clusterCIDR": "10.245.0.0/16",
            "clientConnection": {"kubeconfig": "/var/lib/kube-proxy/kubeconfig.conf"},
            # healthz on the node address: `up` waits for its first sync from this machine.
            "bindAddress": self.ip, "healthzBindAddress": f"{self.ip}:{KUBE_PROXY_HEALTHZ}",
            "metricsBindAddress": "127.0.0.1:10249",
            # Leave the machine's conntrack settings alone (nf_conntrack_max is global).
            "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s",
                          "tcpCloseWaitTimeout": "0s"},
            "iptables": {"localhostNodePorts": False},
        }
        home.write_atomic(self.p("var/lib/kube-proxy/config.conf"), yaml.safe_dump(proxy, sort_keys=False))
        # A learner's edit (the kubelet-security task) survives `ckalab up`; ckalab's version is
        # kept next to the node's files for a reset.
        home.replace_unless_edited(self.p("var/lib/kubelet/config.yaml"), yaml.safe_dump(kubelet, sort_keys=False),
                                   self.p("kubelet-config.orig.yaml"))

    def _kubelet_flags(self) -> list[str]:
        # Paths as on a kubeadm node; they exist in the node's mount namespace (binds()).
        return ["--config=/var/lib/kubelet/config.yaml",
                "--kubeconfig=/etc/kubernetes/kubelet.conf",
                "--root-dir=/var/lib/kubelet",
                "--cert-dir=/var/lib/kubelet/pki",
                f"--hostname-override={self.name}",
                f"--node-ip={self.ip}",
                "--node-labels=ckalab.io/node=real",
                "--v=1"]

    def _tools(self, bins: dict[str, Path]) -> None:
        """What `ckalab ssh <node>` puts on PATH (bin/), and crictl's configuration."""
        tools = {"crictl": bins["crictl"], "kubeadm": bins["kubeadm"], "ctr": bins["ctr"]}
        kubectl = shutil.which("kubectl") or str(Path(sys.executable).parent / "kubectl")
        if Path(kubectl).exists():
            tools["kubectl"] = Path(kubectl)
        if self.is_control_plane:
            tools["etcdctl"] = bins["etcdctl"]
        for name, target in tools.items():
            link = self.p(f"bin/{name}")
            link.unlink(missing_ok=True)
            link.symlink_to(target)
        for name in ("systemctl", "journalctl"):  # the kubelet as a unit (service.py)
            script = self.p(f"bin/{name}")
            script.write_text(f'#!/bin/sh\nexec {sys.executable} -m ckalab.cluster.nodes.service '
                              f'"{self.nodes.cluster.dir}" {self.name} {name} "$@"\n')
            script.chmod(0o755)
        crictl = (f"runtime-endpoint: unix://{self.sock}\nimage-endpoint: unix://{self.sock}\n"
                  "timeout: 10\n")
        _run(["nsenter", f"--mount={self.mntns}", "--", "tee", "/etc/crictl.yaml"], input=crictl)

    def _start(self, comp: str, argv: list[str]) -> int:
        """comp under the clock filter, inside the node's mount and network namespaces."""
        self.started[comp] = self.nodes.spawn(f"{self.name}/{comp}", [
            sys.executable, str(HERE / "noclock.py"), *self._enter(), *argv,
        ], self.p(f"logs/{comp}.log"))
        return self.started[comp]

    def _enter(self) -> list[str]:
        """nsenter into the node's mount and network namespaces, except when this process runs
        in them already (`systemctl restart kubelet` in the node's shell): setns to one's own
        mount namespace fails. Inside, /etc/kubernetes is the node's own directory."""
        try:
            inside = Path("/etc/kubernetes/kubelet.conf").samefile(self.etc_kubernetes / "kubelet.conf")
        except OSError:
            inside = False
        return ["nsenter", "--"] if inside else ["nsenter", f"--mount={self.mntns}",
                                                  f"--net=/run/netns/{self.netns}", "--"]

    def _ctr(self, bins, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return _run([str(bins["ctr"]), "--address", str(self.sock), "--namespace", "k8s.io", *args],
                    check=False, timeout=timeout)

    def _import_images(self, bins, progress) -> None:
        archives = {
            self.p("images/busybox.tar"): lambda p: images.build_busybox(p, bins["clockprobe"]),
            self.p("images/pause.tar"): lambda p: images.build_pause(p, bins["pause"]),
        }
        if self.is_control_plane:
            for path, make in images.control_plane_archives(bins).items():
                archives[path] = make
        have = set(self._ctr(bins, "images", "ls", "-q").stdout.split())
        for path, make in archives.items():
            name = make(path)
            # What this node imported (the control plane's archives are shared by the machine's clusters).
            marker = self.p("images") / path.with_suffix(".imported").name
            if name in have and marker.exists() and marker.read_text() == images.archive_id(path):
                continue  # already in this node's content store (containerd's root is kept)
            t = time.monotonic()
            proc = self._ctr(bins, "images", "import", "--snapshotter", "overlayfs", str(path), timeout=300)
            if proc.returncode != 0:
                raise CkalabError(f"Real node {self.name}: importing {path} failed: {proc.stderr.strip()[-500:]}")
            marker.write_text(images.archive_id(path))
            progress(f"  imported {name} into {self.name} in {time.monotonic() - t:.1f}s")

    def _kube(self):
        from ...kube import Kube
        return Kube(self.nodes.cluster.kubeconfig)

    def _forget_kwok_node(self) -> bool:
        """The kwok stand-in for this node (created by ckalab, never by the learner) makes way
        for the kubelet, which registers the real one."""
        from ..local import KWOK_ANNOTATION
        k = self._kube()
        try:
            node = k.core.read_node(self.name)
        except Exception:  # noqa: BLE001 - not found: nothing to forget
            return False
        if (node.metadata.annotations or {}).get(KWOK_ANNOTATION) == "fake":
            k.core.delete_node(self.name)
            wait_for(lambda: not _exists(k, self.name), 30, f"kwok node {self.name} to go")
            return True
        return False

    def _ready(self, since: float) -> bool:
        """Ready as reported by the kubelet we just started (the Node object of an earlier run
        can still say Ready until the node lifecycle controller notices it is gone)."""
        try:
            node = self._kube().core.read_node(self.name)
        except Exception:  # noqa: BLE001 - not registered yet
            return False
        return any(c.type == "Ready" and c.status == "True" and c.last_heartbeat_time
                   and c.last_heartbeat_time.timestamp() >= since for c in node.status.conditions or [])

    # --- down ------------------------------------------------------------------------------------
    def down(self, progress) -> None:
        running = self.nodes.processes()
        mine = lambda comp: running.get(f"{self.name}/{comp}", [])  # noqa: E731
        stop_pids(mine("kubelet"))  # first, or it would restart the pods we stop next
        crictl = build.group_dir("cri-tools") / "crictl"
        if mine("containerd") and crictl.exists():
            # Pods stopped through the CRI: CNI releases their addresses, containerd their mounts.
            _run([str(crictl), "--runtime-endpoint", f"unix://{self.sock}", "--timeout", "20s",
                  "rmp", "--all", "--force"], check=False, timeout=90)
        # containerd and its shims (which inherit containerd's markers), and anything else left.
        stop_pids([p for c, ps in self.nodes.processes().items() if c.startswith(f"{self.name}/") for p in ps])
        self._kill_cgroup_tasks()
        for h in _hierarchies():
            _rmdir_tree(h / self.cgroup_root.lstrip("/"))
        if self.mntns.exists():
            _run(["umount", str(self.mntns)], check=False)  # the last reference: its mounts go with it
        _run(["ip", "netns", "delete", self.netns], check=False)  # its veth, cni0 and rules go with it
        _run(["ip", "link", "del", self.veth], check=False)
        shutil.rmtree(self.p("run"), ignore_errors=True)  # sockets, runc state, netns files
        if running:
            progress(f"Stopped real node {self.name}.")

    def _kill_cgroup_tasks(self) -> None:
        """Container processes are in the pods' cgroups, not marked: kill what is left there."""
        pids: set[int] = set()
        for h in _hierarchies():
            base = h / self.cgroup_root.lstrip("/")
            if base.is_dir():
                for procs_file in base.rglob("cgroup.procs"):
                    try:
                        pids |= {int(x) for x in procs_file.read_text().split()}
                    except (OSError, ValueError):
                        pass
        pids.discard(os.getpid())
        if pids:
            stop_pids(sorted(pids), timeout=5)


def _up_command(name: str) -> str:
    from ..base import up_command
    return up_command(name)


def _any_kubelet() -> bool:
    for entry in os.scandir("/proc"):
        try:
            if (entry.name.isdigit() and Path(entry.path, "comm").read_text().strip() == "kubelet"
                    and procs.alive(int(entry.name))):  # a zombie holds no socket
                return True
        except OSError:
            pass
    return False


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _exists(k, name: str) -> bool:
    try:
        k.core.read_node(name)
        return True
    except Exception:  # noqa: BLE001
        return False


def _hierarchies() -> list[Path]:
    """The mounted cgroup hierarchies (v1 controllers, named ones and a v2 'unified' mount)."""
    out = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        f = line.split()
        if len(f) > 2 and f[2] in ("cgroup", "cgroup2"):
            out.append(Path(f[1]))
    return out


def _rmdir_tree(path: Path) -> None:
    if not path.is_dir():
        return
    for sub in sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        try:
            sub.rmdir()
        except OSError:
            pass
    try:
        path.rmdir()
    except OSError:
        pass


def ensure_binaries(progress=print) -> dict[str, Path]:
    """The control plane's binaries (for its images) and the nodes' (kubelet, kubeadm,
    containerd, runc, crictl, etcdctl, pause, clockprobe): built once per machine."""
    return {**build.ensure_binaries(progress), **build.ensure_binaries(progress, build.NODE_GROUPS)}


def for_cluster(cluster) -> RealNodes:
    return RealNodes(cluster)
