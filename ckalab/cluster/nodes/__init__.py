"""Real nodes for the local backend (EXPERIMENTAL, opt-in): `ckalab up --nodes real` or
CKALAB_NODES=real. The default cluster (kwok nodes) is untouched when this is not asked for.

Phase 1 runs one real worker, node01, next to the local control plane (processes on 127.0.0.1):

  host                                   node01's network namespace (ckalab-<h>-node01)
  bridge ckb<h>  10.250.X.1/24  <-veth->  eth0 10.250.X.11 (node IP, not loopback; no default route)
  relay 10.250.X.1:<api port> -> 127.0.0.1:<api port>      containerd, kubelet
                                                          cni0 (CNI bridge) 10.245.1.1/24 -> pods

containerd and kubelet share one mount namespace of their own (pinned at nodes/<node>/run/mntns):
every mount they and the pods make (overlay rootfs, volumes, pod netns files) lives there and goes
away with it, and the kubelet reads masked kernel settings (see _SYSCTL_MASKS) instead of
rewriting this machine's. Both start through noclock.py, so nothing below them can set the clock.
Everything is found again by the CKALAB_CLUSTER_DIR/CKALAB_COMPONENT markers (processes), by
name (links, namespace) and by path (cgroups, mounts), so `down` removes all of it even after a
crash. See docs/real-nodes.md.
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

from ... import home, pki
from ...errors import CkalabError
from ...pki import CLIENT_AUTH, SERVER_AUTH
from ...waiting import WaitTimeout, wait_for
from ..local import build, procs
from ..local import pki as kpki
from . import images

ENV = "CKALAB_NODES"
NODES = ("node01",)  # phase 1: one real worker
COMPONENT_PREFIX = "real-node:"
HERE = Path(__file__).parent
CNI_BIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")  # Debian's containernetworking-plugins, upstream's
# What the kubelet insists on finding in these kernel settings (it rewrites them otherwise, and
# they are this machine's, not the node's): it reads these values from files mounted over them
# in the node's own mount namespace.
_SYSCTL_MASKS = {"vm/overcommit_memory": "1", "vm/panic_on_oom": "0",
                 "kernel/panic": "10", "kernel/panic_on_oops": "1"}
# Directories that containerd, libcni and the kubelet create at fixed host paths whatever their
# configuration says; `down` removes them when they are empty (another runtime's are not).
FIXED_DIRS = ("/run/containerd/s", "/run/containerd", "/var/lib/cni/results", "/var/lib/cni",
              "/var/lib/kubelet/device-plugins", "/var/lib/kubelet")
SKIP_IMAGE_GC = {"imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99}


def requested() -> bool:
    return os.environ.get(ENV, "").strip().lower() == "real"


def _run(cmd: list[str], check: bool = True, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise CkalabError(f"Real node setup: `{' '.join(cmd)}` failed: {(proc.stderr or proc.stdout).strip()[-800:]}")
    return proc


def _marker(pid: int) -> tuple[str, str] | None:
    env = procs._environ(pid) or {}
    comp = env.get(procs.COMPONENT_ENV, "")
    if comp.startswith(COMPONENT_PREFIX) and procs.alive(pid):
        return env.get(procs.CLUSTER_ENV, ""), comp[len(COMPONENT_PREFIX):]
    return None


class RealNodes:
    """The real nodes of one local cluster (only node01 in phase 1)."""

    def __init__(self, cluster) -> None:
        self.cluster = cluster
        self.root = cluster.dir / "nodes"
        h = hashlib.sha1(str(cluster.dir).encode()).hexdigest()
        self.tag = h[:6]
        self.subnet = ipaddress.ip_network(f"10.250.{int(h[6:10], 16) % 200 + 20}.0/24")
        self.bridge = f"ckb{self.tag}"

    # --- which nodes -----------------------------------------------------------------------------
    @property
    def _mode_file(self) -> Path:
        return self.root / "mode"

    def enabled(self) -> bool:
        """Real nodes stay on once asked for (until `ckalab up --nodes kwok`): kwok must not get
        node01 back while its kubelet still runs."""
        if requested():
            return True
        if os.environ.get(ENV, "").strip().lower() == "kwok":
            return False
        return self._mode_file.exists() and self._mode_file.read_text().strip() == "real"

    def names(self) -> tuple[str, ...]:
        return NODES if self.enabled() else ()

    def node(self, name: str) -> "Node":
        return Node(self, name, NODES.index(name))

    @property
    def gateway(self) -> str:
        return str(self.subnet.network_address + 1)

    # --- lifecycle -------------------------------------------------------------------------------
    def up(self, progress) -> None:
        if not self.enabled():
            if self._mode_file.exists():
                self.back_to_kwok(progress)
            return
        self._check_host()  # before a build of minutes that could not be used
        bins = ensure_binaries(progress)
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            self._bridge_up()
            self._relay_up(bins)
            for name in NODES:
                self.node(name).up(bins, progress)
        except BaseException:
            # Half a node is worse than none: remove what was started, give the cluster its
            # kwok nodes back, and let the error say what failed.
            progress("Real node setup failed: removing what it started; the cluster keeps kwok nodes.")
            try:
                self.back_to_kwok(lambda m: None)
            except Exception:  # noqa: BLE001 - the original error matters more
                pass
            raise
        home.write_atomic(self._mode_file, "real\n")

    def down(self, progress) -> None:
        """Stop and remove everything the real nodes started or created; safe to repeat."""
        if not self.root.exists():
            return
        for name in NODES:
            self.node(name).down(progress)
        self._stop("relay")
        _run(["ip", "link", "del", self.bridge], check=False)
        if not self.processes():
            if not _any_kubelet():  # the kubelet leaves its device-plugin socket behind
                Path("/var/lib/kubelet/device-plugins/kubelet.sock").unlink(missing_ok=True)
            for d in FIXED_DIRS:
                try:
                    os.rmdir(d)
                except OSError:
                    pass  # absent, or holds another runtime's files
        progress(f"Real nodes of '{self.cluster.name}' stopped and removed (bridge {self.bridge}).")

    def back_to_kwok(self, progress) -> None:
        """`up --nodes kwok` after real nodes: stop them, drop their Node objects (registered by
        our kubelets) and let the local backend create its kwok stand-ins again."""
        self.down(progress)
        self._mode_file.unlink(missing_ok=True)
        k = self.node(NODES[0])._kube()
        for name in NODES:
            try:
                k.core.delete_node(name)
            except Exception:  # noqa: BLE001 - already gone
                pass
        saved = os.environ.get(ENV)
        os.environ[ENV] = "kwok"  # so that the local backend creates node01 as a kwok node again
        try:
            self.cluster._bootstrap()
        finally:
            if saved is None:
                del os.environ[ENV]
            else:
                os.environ[ENV] = saved
        progress(f"Cluster '{self.cluster.name}' uses kwok nodes again.")

    def running(self) -> bool:
        return bool(self.processes())

    def processes(self) -> dict[str, list[int]]:
        """'<node>/<component>' -> live pids with this cluster's real-node markers."""
        found: dict[str, list[int]] = {}
        for entry in os.scandir("/proc"):
            if entry.name.isdigit():
                m = _marker(int(entry.name))
                if m and m[0] == str(self.cluster.dir):
                    found.setdefault(m[1], []).append(int(entry.name))
        return found

    # --- shared pieces ---------------------------------------------------------------------------
    def _check_host(self) -> None:
        longest = self.node(NODES[0]).sock
        if len(str(longest)) + len(".ttrpc") > 107:  # sun_path holds 108 bytes with its NUL
            raise CkalabError(f"The real node's socket path {longest} is too long for a unix socket: "
                              "use a shorter CKALAB_HOME.")
        missing = [t for t in ("ip", "nsenter", "unshare", "mount", "umount") if not shutil.which(t)]
        if not any(Path(d, "bridge").exists() for d in CNI_BIN_DIRS):
            missing.append("CNI plugins (apt-get install containernetworking-plugins)")
        if os.geteuid() != 0:
            raise CkalabError("Real nodes need root (network namespaces, mounts, cgroups).")
        if missing:
            raise CkalabError(f"Real nodes need: {', '.join(missing)}.")

    def _bridge_up(self) -> None:
        if _run(["ip", "link", "show", self.bridge], check=False).returncode != 0:
            clash = _run(["ip", "-4", "route", "show", str(self.subnet)], check=False).stdout.strip()
            if clash:
                raise CkalabError(f"Subnet {self.subnet} for the real nodes' bridge is already routed "
                                  f"on this machine ({clash}); see `ip route`.")
            _run(["ip", "link", "add", "name", self.bridge, "type", "bridge"])
            _run(["ip", "addr", "add", f"{self.gateway}/{self.subnet.prefixlen}", "dev", self.bridge])
        _run(["ip", "link", "set", self.bridge, "up"])

    def _relay_up(self, bins) -> None:
        if self.processes().get("relay"):
            return
        port = self.cluster.load_state()["ports"]["apiserver"]
        self.spawn("relay", [sys.executable, str(HERE / "proxy.py"), f"{self.gateway}:{port}",
                             f"127.0.0.1:{port}"], self.root / "relay.log")
        wait_for(lambda: _listening(self.gateway, port), 10, "the API relay on the bridge")

    def spawn(self, comp: str, argv: list[str], log: Path) -> int:
        log.parent.mkdir(parents=True, exist_ok=True)
        env = procs.marker_env(self.cluster.dir, COMPONENT_PREFIX + comp)
        with open(log, "ab") as out:
            p = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env=env, cwd=self.root, start_new_session=True)
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
        self.ip = str(nodes.subnet.network_address + 11 + index)
        self.pod_subnet = f"10.245.{index + 1}.0/24"
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

    # --- up --------------------------------------------------------------------------------------
    def up(self, bins: dict[str, Path], progress) -> None:
        procs_now = self.nodes.processes()
        if procs_now.get(f"{self.name}/kubelet") and procs_now.get(f"{self.name}/containerd"):
            progress(f"Real node {self.name} is already running (kubelet, containerd).")
            return
        self.down(lambda m: None)  # leftovers of a crash: start from a clean slate
        start = time.monotonic()
        progress(f"Starting real node {self.name} ({self.ip}, netns {self.netns}): containerd, kubelet ...")
        for sub in ("etc/containerd", "etc/cni/net.d", "etc/kubernetes/manifests", "etc/sysctl",
                    "pki", "run", "var/lib/containerd", "var/lib/kubelet", "var/lib/cni",
                    "var/log/pods", "images", "logs"):
            self.p(sub).mkdir(parents=True, exist_ok=True)
        self._network()
        self._mount_namespace()
        self._cgroups()
        self._write_pki()
        self._write_configs(bins)
        self._start("containerd", [str(bins["containerd"]), "--config", str(self.p("etc/containerd/config.toml"))])
        self._wait(lambda: self.sock.exists() and self._ctr(bins, "version").returncode == 0, 60, "containerd")
        self._import_images(bins)
        self._forget_kwok_node()
        since = time.time() - 1
        self._start("kubelet", [str(bins["kubelet"]), *self._kubelet_flags()])
        self._wait(lambda: self._ready(since), 120, f"node {self.name} to be Ready")
        progress(f"  real node {self.name} Ready after {time.monotonic() - start:.1f}s")

    def _wait(self, predicate, timeout: float, what: str) -> None:
        def step():
            # By pid, not by marker: a process in the middle of an exec (noclock -> nsenter ->
            # containerd) can briefly show no environment at all.
            for comp, pid in self.started.items():
                if not procs.alive(pid):
                    return ("exited", comp)
            return predicate()

        try:
            got = wait_for(step, timeout, what)
        except WaitTimeout:
            raise CkalabError(f"Real node {self.name}: timed out waiting for {what}; logs in {self.p('logs')}") from None
        if isinstance(got, tuple) and got[0] == "exited":
            tail = self.p(f"logs/{got[1]}.log").read_text(errors="replace").splitlines()[-15:]
            raise CkalabError(f"Real node {self.name}: {got[1]} exited while waiting for {what}:\n  "
                              + "\n  ".join(tail))

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
        # No default route, on purpose: the node talks to the bridge's subnet only (the relay,
        # the API server's calls to the kubelet), and a pod's packet for any other address dies
        # here instead of reaching the host, which could forward it off the machine.

    def _mount_namespace(self) -> None:
        """A mount namespace for containerd, kubelet and the pods, pinned by a bind mount of its
        file, with the kubelet's kernel settings masked (see _SYSCTL_MASKS)."""
        self.mntns.touch()
        _run(["unshare", f"--mount={self.mntns}", "--propagation", "private", "true"])
        for key, value in _SYSCTL_MASKS.items():
            f = self.p(f"etc/sysctl/{key.replace('/', '.')}")
            f.write_text(value + "\n")
            _run(["nsenter", f"--mount={self.mntns}", "--", "mount", "--bind", "-o", "ro", str(f),
                  f"/proc/sys/{key}"])

    def _cgroups(self) -> None:
        """The kubelet's --cgroup-root must exist in every hierarchy before it starts."""
        for h in _hierarchies():
            d = h / self.cgroup_root.lstrip("/")
            d.mkdir(exist_ok=True)
            for f in ("cpuset.cpus", "cpuset.mems"):  # v1 cpuset: empty until copied; no task could join
                if (h / f).exists() and not (d / f).read_text().strip():
                    (d / f).write_text((h / f).read_text())

    def _write_pki(self) -> None:
        ca_key = pki.load_key(self.cluster_pki / "ca.key")
        ca_cert = pki.load_cert(self.cluster_pki / "ca.crt")
        cn = f"system:node:{self.name}"
        if not self.p("pki/kubelet-client.crt").exists():
            key, cert = pki.sign(ca_key, ca_cert, cn, orgs=("system:nodes",), usages=(CLIENT_AUTH,))
            pki.write_pair(self.p("pki"), "kubelet-client", key, cert)
        if not self.p("pki/kubelet.crt").exists():
            key, cert = pki.sign(ca_key, ca_cert, cn, orgs=("system:nodes",), usages=(SERVER_AUTH,),
                                 dns=(self.name,), ips=(self.ip,))
            pki.write_pair(self.p("pki"), "kubelet", key, cert)
        port = self.nodes.cluster.load_state()["ports"]["apiserver"]
        conf = kpki.kubeconfig_dict(f"https://{self.nodes.gateway}:{port}", pki.cert_pem(ca_cert), cn,
                                    self.p("pki/kubelet-client.crt").read_bytes(),
                                    self.p("pki/kubelet-client.key").read_bytes())
        # Through the relay: the API server's certificate names 'kubernetes', not the bridge address.
        conf["clusters"][0]["cluster"]["tls-server-name"] = "kubernetes"
        home.write_atomic(self.p("etc/kubernetes/kubelet.conf"), yaml.safe_dump(conf, sort_keys=False), private=True)

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
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "{images.PAUSE_IMAGE}"
"""
        home.write_atomic(self.p("etc/containerd/config.toml"), toml)
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
                               "x509": {"clientCAFile": str(self.cluster_pki / "ca.crt")}},
            "authorization": {"mode": "Webhook"},
            "tlsCertFile": str(self.p("pki/kubelet.crt")), "tlsPrivateKeyFile": str(self.p("pki/kubelet.key")),
            # This machine: cgroup v1 (deprecated upstream, refused unless allowed) without systemd.
            "failCgroupV1": False, "cgroupDriver": "cgroupfs", "cgroupRoot": self.cgroup_root,
            "containerRuntimeEndpoint": f"unix://{self.sock}",
            "staticPodPath": str(self.p("etc/kubernetes/manifests")),
            "podLogsDir": str(self.p("var/log/pods")),
            "clusterDomain": "cluster.local", "clusterDNS": ["10.96.0.10"],
            "failSwapOn": False, "maxPods": 30,
            # A shared laptop disk must not make the node evict lab pods or delete our images.
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%",
                             "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
            **SKIP_IMAGE_GC,
        }
        home.write_atomic(self.p("etc/kubernetes/kubelet-config.yaml"), yaml.safe_dump(kubelet, sort_keys=False))

    def _kubelet_flags(self) -> list[str]:
        return [f"--config={self.p('etc/kubernetes/kubelet-config.yaml')}",
                f"--kubeconfig={self.p('etc/kubernetes/kubelet.conf')}",
                f"--root-dir={self.p('var/lib/kubelet')}",
                f"--cert-dir={self.p('pki')}",
                f"--hostname-override={self.name}",
                f"--node-ip={self.ip}",
                "--node-labels=ckalab.io/node=real",
                "--v=1"]

    def _start(self, comp: str, argv: list[str]) -> int:
        """comp under the clock filter, inside the node's mount and network namespaces."""
        self.started[comp] = self.nodes.spawn(f"{self.name}/{comp}", [
            sys.executable, str(HERE / "noclock.py"),
            "nsenter", f"--mount={self.mntns}", f"--net=/run/netns/{self.netns}", "--", *argv,
        ], self.p(f"logs/{comp}.log"))
        return self.started[comp]

    def _ctr(self, bins, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return _run([str(bins["ctr"]), "--address", str(self.sock), "--namespace", "k8s.io", *args],
                    check=False, timeout=timeout)

    def _import_images(self, bins) -> None:
        archives = {
            "busybox.tar": lambda p: images.build_busybox(p, bins["clockprobe"]),
            "pause.tar": lambda p: images.build_pause(p, bins["pause"]),
        }
        for fname, make in archives.items():
            path = self.p(f"images/{fname}")
            make(path)
            proc = self._ctr(bins, "images", "import", "--snapshotter", "overlayfs", str(path), timeout=120)
            if proc.returncode != 0:
                raise CkalabError(f"Real node {self.name}: importing {path} failed: {proc.stderr.strip()[-500:]}")

    def _kube(self):
        from ...kube import Kube
        return Kube(self.nodes.cluster.kubeconfig)

    def _forget_kwok_node(self) -> None:
        """The kwok stand-in for this node (created by ckalab, never by the learner) makes way
        for the kubelet, which registers the real one."""
        from ..local import KWOK_ANNOTATION
        k = self._kube()
        try:
            node = k.core.read_node(self.name)
        except Exception:  # noqa: BLE001 - not found: nothing to forget
            return
        if (node.metadata.annotations or {}).get(KWOK_ANNOTATION) == "fake":
            k.core.delete_node(self.name)
            wait_for(lambda: not _exists(k, self.name), 30, f"kwok node {self.name} to go")

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
    """kubelet, kubeadm, containerd, runc, crictl, pause, clockprobe: built once per machine."""
    return build.ensure_binaries(progress, build.NODE_GROUPS)


def for_cluster(cluster) -> RealNodes:
    return RealNodes(cluster)
