"""The local backend: a real control plane (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler) run as processes on this machine, with kwok providing the nodes.

Layout under $CKALAB_HOME/clusters/<name>/ mirrors a kubeadm control plane:
  etc/kubernetes/pki/...            certificates and keys (kubeadm names)
  etc/kubernetes/*.conf             admin, super-admin, controller-manager, scheduler kubeconfigs
  etc/kubernetes/manifests/*.yaml   "static Pod" manifests: the exact command line each process runs
  var/lib/etcd                      etcd data (kept across down/up)
  logs/<component>.log, run/<component>.pid
  lifecycle.lock                    held by `up` and `down` for their whole run (one at a time)

Component processes carry CKALAB_CLUSTER_DIR=<this directory> in their environment (procs.py):
`down` and `status` find them by it, so a lost or stale pid file cannot hide a process or point
at another cluster's.

Containers do not really run here: kwok marks pods Running on fake nodes, so exec, logs and
real network traffic between pods are not available (use the kind backend for those).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Callable

import yaml

from ... import home
from ...errors import CkalabError, ClusterNotRunning
from ...waiting import WaitTimeout, wait_for
from ..base import Cluster, ClusterStatus, ComponentStatus, Progress, command, up_command
from . import build, procs
from . import pki as kpki

NODE_ETC = "/etc/kubernetes"  # where a kubeadm node keeps its configuration and PKI

NODE = "controlplane"
WORKERS = ("node01", "node02")
ADVERTISE = "127.0.0.1"  # everything listens on loopback only
CONTROL_PLANE = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")
COMPONENTS = (*CONTROL_PLANE, "kwok")
# Started once kube-apiserver's /readyz passes (process mode): the controller manager waits only
# 10 s for the API server's /healthz and then exits, and on a loaded machine the API server can
# take longer to authorize it (CI on 899db49: "forbidden: User system:kube-controller-manager
# cannot get path /healthz" for 11 s, until the RBAC bootstrap roles existed).
AFTER_API = ("kube-controller-manager",)
# The first line of a manifest written for the process mode: a description, never read by a
# kubelet, which the real-node mode replaces by a static pod (and never any other file).
PROCESS_HEADER = "# Written by ckalab's local backend. On a kubeadm node the kubelet runs this as a\n"
STATIC_HEADER = ("# Written by ckalab for the controlplane node: its kubelet runs this static Pod and\n"
                 "# restarts it when this file changes. `ckalab restore-manifests` brings ckalab's version back.\n")
# Host paths each component's static pod mounts, as kubeadm's manifests do:
# (volume name, path, hostPath type, read-only).
STATIC_VOLUMES = {
    "etcd": [("etcd-certs", "/etc/kubernetes/pki/etcd", "DirectoryOrCreate", False),
             ("etcd-data", "/var/lib/etcd", "DirectoryOrCreate", False)],
    "kube-apiserver": [("k8s-certs", "/etc/kubernetes/pki", "DirectoryOrCreate", True),
                       ("audit-policy", "/etc/kubernetes/audit-policy.yaml", "File", True),
                       ("audit-log", "/var/log/kubernetes/audit", "DirectoryOrCreate", False)],
    "kube-controller-manager": [("k8s-certs", "/etc/kubernetes/pki", "DirectoryOrCreate", True),
                                ("kubeconfig", "/etc/kubernetes/controller-manager.conf", "FileOrCreate", True)],
    "kube-scheduler": [("kubeconfig", "/etc/kubernetes/scheduler.conf", "FileOrCreate", True)],
}
PROCESS_MODE = "processes on 127.0.0.1, kwok nodes (pods do not run; 'ckalab up --nodes real' as root for real nodes)"
REAL_MODE = ("real nodes: controlplane (static pods) and node01 run kubelet + containerd, kube-proxy and "
             "kube-router (NetworkPolicy); node02 is kwok")
STATIC_CPU = {"etcd": "100m", "kube-apiserver": "250m", "kube-controller-manager": "200m", "kube-scheduler": "100m"}
PORT_NAMES = ("etcd", "etcd-peer", "etcd-metrics", "apiserver", "controller-manager", "scheduler", "kwok")
KWOK_ANNOTATION = "kwok.x-k8s.io/node"
# How long `up` waits for a port no live process holds before giving it up: a component stopped
# by this `up` (or a moment before) leaves its listener to the kernel for up to a second (CI moved
# the API server's port because of that 0.3 s), while a port another program listens on moves at once.
PORT_RELEASE_SECONDS = 10.0


def _bindable(port: int) -> bool:
    """Could a component listen on 127.0.0.1:port now? Probed as Go's net.Listen binds, with
    SO_REUSEADDR: a port whose old connections linger in TIME_WAIT after `down` is still ours;
    only a listener or another live socket on it makes it taken."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((ADVERTISE, port))
            s.listen(1)
            return True
        except OSError:
            return False


def _pick_ports(n: int, avoid: set[int]) -> list[int]:
    """n free ports outside the kernel's ephemeral range, so that while the cluster is stopped
    no outgoing connection of another program borrows one of them."""
    try:
        lo, hi = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        lo, hi = 32768, 60999
    pool = [p for p in range(20000, 65536) if not lo <= p <= hi and p not in avoid]
    random.SystemRandom().shuffle(pool)
    picked: list[int] = []
    for port in pool:
        if len(picked) == n:
            break
        if _bindable(port):
            picked.append(port)
    while len(picked) < n:  # everything is ephemeral on this machine: let the kernel choose
        with socket.socket() as s:
            s.bind((ADVERTISE, 0))
            port = s.getsockname()[1]
        if port not in avoid and port not in picked:
            picked.append(port)
    return picked


def _claims() -> Path:
    """The ports each cluster on this machine picked, whatever its CKALAB_HOME."""
    return home.machine_dir() / "ports"


class LocalCluster(Cluster):
    backend = "local"
    # kwok nodes run no containers: no exec, no traffic; the control plane's files are on this host
    features = frozenset({"node-files"})
    node_modes = ("kwok", "real")  # `ckalab up --nodes MODE` (docs/real-nodes.md)

    @property
    def etc(self) -> Path:
        return self.dir / "etc" / "kubernetes"

    @property
    def kubeconfig(self) -> Path:
        return self.etc / "admin.conf"

    @property
    def pki_dir(self) -> str:
        return str(self.etc / "pki")

    def read_file(self, path: str) -> bytes:
        """A control-plane file by a path relative to the PKI, a path on this host (the manifests
        of kwok mode name those), or a path on the controlplane node as kubeadm lays it out (the
        manifests of real nodes name those): /etc/kubernetes there is this cluster's etc/kubernetes,
        anything else is read through the node's shell."""
        p = Path(path)
        if not p.is_absolute():
            p = self.etc / "pki" / p
        elif p == Path(NODE_ETC) or Path(NODE_ETC) in p.parents:
            p = self.etc / p.relative_to(NODE_ETC)
        elif not p.exists() and self._real_mode():
            return self._read_on_node(path)
        try:
            return p.read_bytes()
        except OSError as exc:
            raise CkalabError(f"Cannot read {path if Path(path).is_absolute() else p}: {exc.strerror}") from None

    def _read_on_node(self, path: str, limit: int = 16 << 20) -> bytes:
        argv, env = self.shell("controlplane", ["sh", "-c", 'test -f "$1" || exit 3; head -c "$2" "$1"', "sh",
                                                path, str(limit)])
        proc = subprocess.run(argv, env=env, capture_output=True, timeout=30)
        if proc.returncode == 3:
            raise CkalabError(f"Cannot read {path} on the controlplane node: no such file")
        if proc.returncode:
            raise CkalabError(f"Cannot read {path} on the controlplane node: "
                              f"{proc.stderr.decode(errors='replace').strip()[:200]}")
        return proc.stdout

    def manifest(self, component: str) -> dict:
        p = self.etc / "manifests" / f"{component}.yaml"
        if not p.exists():
            raise ClusterNotRunning(f"No manifest at {p}: run '{up_command(self.name)}' first.")
        return yaml.safe_load(p.read_text())

    # --- configuration ---------------------------------------------------------------------------
    def _recorded_ports(self, state: dict) -> dict[str, int]:
        """The addresses this cluster had: cluster.json, or (when that was moved aside) the
        command lines in the manifests, so a repaired cluster keeps its API server address."""
        if state.get("ports"):
            return {k: v for k, v in state["ports"].items() if k in PORT_NAMES}
        ports: dict[str, int] = {}
        sources = {"etcd": ("etcd", "listen-client-urls"), "etcd-peer": ("etcd", "listen-peer-urls"),
                   "etcd-metrics": ("etcd", "listen-metrics-urls"),
                   "apiserver": ("kube-apiserver", "secure-port"),
                   "controller-manager": ("kube-controller-manager", "secure-port"),
                   "scheduler": ("kube-scheduler", "secure-port")}
        for name, (comp, flag) in sources.items():
            try:
                ports[name] = int(self.component_flags(comp)[flag].rsplit(":", 1)[-1])
            except (CkalabError, OSError, LookupError, ValueError, TypeError, AttributeError,
                    yaml.YAMLError):
                pass  # no usable manifest: this port is picked anew
        return ports

    def _ports(self, recorded: dict[str, int], progress: Progress, ours: frozenset[str] = frozenset()) -> dict[str, int]:
        """Keep every recorded port that is still free for us (or held by our own running
        component named in `ours`); re-pick only the ones another process really holds, and say so
        (the API server's address is in learners' kubeconfigs)."""
        taken = {n: p for n, p in recorded.items() if n not in ours and not _bindable(p)}
        if any(procs.port_holder(p) is None for p in taken.values()):
            # No live process holds it: most likely our own component stopped a moment ago (its
            # listener outlives its process by up to a second), so wait before moving anything.
            try:
                wait_for(lambda: all(_bindable(p) for p in taken.values() if procs.port_holder(p) is None),
                         PORT_RELEASE_SECONDS, "ports to be released", interval=0.1)
            except WaitTimeout:
                pass  # still taken: moved below, and said so
            taken = {n: p for n, p in taken.items() if not _bindable(p)}
        keep = {n: p for n, p in recorded.items() if n not in taken}
        todo = [n for n in PORT_NAMES if n not in keep]
        # Picked and claimed under one machine-wide lock: a port is bound only when its component
        # starts, up to a minute later with real nodes, and four test workers starting at once
        # gave one cluster's kwok the port another had just picked for its API server.
        with home.locked(_claims() / ".lock", f"picking ports for cluster '{self.name}'", timeout=60):
            avoid = set(recorded.values()) | self._other_clusters_ports()
            ports = {**keep, **dict(zip(todo, _pick_ports(len(todo), avoid)))}
            home.write_atomic(self._claim_file(), json.dumps({"cluster": str(self.dir), "ports": ports}))
        for name, old in taken.items():
            progress(f"Port {old} ({name}) of cluster '{self.name}' is in use by {procs.port_user(old)}: "
                     f"using port {ports[name]} instead.")
        if "apiserver" in taken:
            progress(f"The API server moves to https://{ADVERTISE}:{ports['apiserver']}: the kubeconfigs "
                     f"in {self.etc} follow; kubeconfigs you wrote yourself still name port {taken['apiserver']}.")
        return {n: ports[n] for n in PORT_NAMES}

    def _claim_file(self) -> Path:
        return _claims() / (hashlib.sha256(str(self.dir).encode()).hexdigest()[:20] + ".json")

    def _other_clusters_ports(self) -> set[int]:
        """Ports of the other clusters of this home, recorded, and of every cluster on this machine,
        claimed (other CKALAB_HOMEs): a stopped one will want them back. A claim goes with its
        cluster's directory."""
        used: set[int] = set()

        def add(ports) -> None:
            used.update(p for p in (ports or {}).values() if type(p) is int)

        for f in self.dir.parent.glob("*/cluster.json"):
            if f.parent != self.dir:
                try:
                    add(json.loads(f.read_text()).get("ports"))
                except (OSError, ValueError, AttributeError, TypeError):
                    pass  # its owner gets the clear message; here it just reserves nothing
        for f in _claims().glob("*.json"):
            try:
                claim = json.loads(f.read_text())
                if claim["cluster"] != str(self.dir):
                    if Path(claim["cluster"]).is_dir():
                        add(claim["ports"])
                    else:
                        f.unlink(missing_ok=True)
            except (OSError, ValueError, LookupError, AttributeError, TypeError):
                f.unlink(missing_ok=True)  # written by nothing of ours: reserves nothing
        return used

    # Audit log (owned by "instructors": `ckalab classroom evidence` reads it). Metadata level:
    # who, what, when and the answer, never request or response bodies (no Secret values land
    # in the log). The control plane's own traffic and read-only noise are left out so a
    # student's calls are not buried; denied requests are kept whoever made them.
    AUDIT_POLICY = {
        "apiVersion": "audit.k8s.io/v1", "kind": "Policy", "omitStages": ["RequestReceived"],
        "rules": [
            {"level": "None", "users": ["kwok-controller", "system:kube-scheduler", "system:kube-controller-manager",
                                        "system:apiserver"]},
            {"level": "None", "userGroups": ["system:serviceaccounts:kube-system", "system:nodes"]},
            {"level": "None", "nonResourceURLs": ["/healthz*", "/livez*", "/readyz*", "/version", "/openapi*",
                                                  "/api", "/apis", "/apis/*", "/api/*"],
             "verbs": ["get"]},
            {"level": "None", "resources": [{"group": "coordination.k8s.io", "resources": ["leases"]},
                                            {"group": "", "resources": ["events"]}]},
            {"level": "Metadata"},
        ],
    }

    def _audit_flags(self) -> list[str]:
        policy = self.etc / "audit-policy.yaml"
        home.write_atomic(policy, yaml.safe_dump(self.AUDIT_POLICY, sort_keys=False))
        return [f"--audit-log-path={self.dir}/logs/audit.log", "--audit-log-maxbackup=2", "--audit-log-maxsize=50",
                f"--audit-policy-file={policy}"]

    def _commands(self, ports: dict[str, int], bins: dict[str, Path], node_ip: str | None = None) -> dict[str, list[str]]:
        """Each component's command line; with `node_ip`, as the controlplane node's static pods
        run it: kubeadm's paths, and the API server on the node's address."""
        if node_ip:
            return self._on_node(self._commands(ports, bins), node_ip)
        pki, etc = self.etc / "pki", self.etc
        etcd_url = f"https://{ADVERTISE}:{ports['etcd']}"
        peer_url = f"https://{ADVERTISE}:{ports['etcd-peer']}"
        return {
            "etcd": [
                "etcd",
                f"--advertise-client-urls={etcd_url}",
                f"--cert-file={pki}/etcd/server.crt",
                "--client-cert-auth=true",
                f"--data-dir={self.dir}/var/lib/etcd",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster={NODE}={peer_url}",
                f"--key-file={pki}/etcd/server.key",
                f"--listen-client-urls={etcd_url}",
                f"--listen-metrics-urls=http://{ADVERTISE}:{ports['etcd-metrics']}",
                f"--listen-peer-urls={peer_url}",
                f"--name={NODE}",
                f"--peer-cert-file={pki}/etcd/peer.crt",
                "--peer-client-cert-auth=true",
                f"--peer-key-file={pki}/etcd/peer.key",
                f"--peer-trusted-ca-file={pki}/etcd/ca.crt",
                "--snapshot-count=10000",
                f"--trusted-ca-file={pki}/etcd/ca.crt",
            ],
            "kube-apiserver": [
                "kube-apiserver",
                f"--advertise-address={ADVERTISE}",
                "--allow-privileged=true",
                *self._audit_flags(),
                "--authorization-mode=Node,RBAC",
                f"--bind-address={ADVERTISE}",
                f"--client-ca-file={pki}/ca.crt",
                "--enable-admission-plugins=NodeRestriction",
                "--enable-bootstrap-token-auth=true",
                f"--etcd-cafile={pki}/etcd/ca.crt",
                f"--etcd-certfile={pki}/apiserver-etcd-client.crt",
                f"--etcd-keyfile={pki}/apiserver-etcd-client.key",
                f"--etcd-servers={etcd_url}",
                f"--kubelet-client-certificate={pki}/apiserver-kubelet-client.crt",
                f"--kubelet-client-key={pki}/apiserver-kubelet-client.key",
                "--kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname",
                f"--proxy-client-cert-file={pki}/front-proxy-client.crt",
                f"--proxy-client-key-file={pki}/front-proxy-client.key",
                "--requestheader-allowed-names=front-proxy-client",
                f"--requestheader-client-ca-file={pki}/front-proxy-ca.crt",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-username-headers=X-Remote-User",
                f"--secure-port={ports['apiserver']}",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki}/sa.pub",
                f"--service-account-signing-key-file={pki}/sa.key",
                f"--service-cluster-ip-range={kpki.SERVICE_CIDR}",
                f"--tls-cert-file={pki}/apiserver.crt",
                f"--tls-private-key-file={pki}/apiserver.key",
            ],
            "kube-controller-manager": [
                "kube-controller-manager",
                f"--authentication-kubeconfig={etc}/controller-manager.conf",
                f"--authorization-kubeconfig={etc}/controller-manager.conf",
                f"--bind-address={ADVERTISE}",
                f"--client-ca-file={pki}/ca.crt",
                f"--cluster-name={kpki.CLUSTER_NAME}",
                f"--cluster-signing-cert-file={pki}/ca.crt",
                f"--cluster-signing-key-file={pki}/ca.key",
                "--controllers=*,bootstrapsigner,tokencleaner",
                f"--kubeconfig={etc}/controller-manager.conf",
                # kubeadm sets true; one instance gains nothing from it and a restart would wait
                # out the previous holder's 15 s lease before signing CSRs again.
                "--leader-elect=false",
                f"--requestheader-client-ca-file={pki}/front-proxy-ca.crt",
                f"--root-ca-file={pki}/ca.crt",
                f"--secure-port={ports['controller-manager']}",
                f"--service-account-private-key-file={pki}/sa.key",
                "--use-service-account-credentials=true",
            ],
            "kube-scheduler": [
                "kube-scheduler",
                f"--authentication-kubeconfig={etc}/scheduler.conf",
                f"--authorization-kubeconfig={etc}/scheduler.conf",
                f"--bind-address={ADVERTISE}",
                f"--kubeconfig={etc}/scheduler.conf",
                "--leader-elect=false",  # as for the controller manager
                f"--secure-port={ports['scheduler']}",
            ],
            "kwok": [
                "kwok",
                f"--kubeconfig={self.dir}/kwok.conf",
                f"--config={Path(__file__).parent / 'kwok-stages.yaml'}",
                "--manage-all-nodes=false",
                f"--manage-nodes-with-annotation-selector={KWOK_ANNOTATION}=fake",
                "--cidr=10.244.0.0/16",
                f"--node-ip={ADVERTISE}",
                f"--node-port={ports['kwok']}",
                "--node-lease-duration-seconds=40",  # leases keep the node lifecycle controller happy
                f"--server-address={ADVERTISE}:{ports['kwok']}",
            ],
        }

    def _on_node(self, commands: dict[str, list[str]], node_ip: str) -> dict[str, list[str]]:
        paths = {f"{self.dir}/logs/audit.log": "/var/log/kubernetes/audit/audit.log",
                 f"{self.dir}/var/lib/etcd": "/var/lib/etcd", str(self.etc): "/etc/kubernetes"}

        def local(arg: str) -> str:
            for host, node in paths.items():
                arg = arg.replace(host, node)
            return arg

        out = {c: [local(a) for a in cmd] for c, cmd in commands.items() if c in CONTROL_PLANE}
        out["kube-apiserver"] = [f"--advertise-address={node_ip}" if a.startswith("--advertise-address=") else a
                                 for a in out["kube-apiserver"] if not a.startswith("--bind-address=")]
        return out

    def _static_pod(self, comp: str, cmd: list[str], ports: dict[str, int], node_ip: str) -> dict:
        from ..nodes import images

        image = (f"registry.k8s.io/etcd:{images.ETCD_TAG}" if comp == "etcd"
                 else f"registry.k8s.io/{comp}:{build.K8S_VERSION}")
        probe_target = {"etcd": ("127.0.0.1", ports["etcd-metrics"], "/health?exclude=NOSPACE&serializable=true", "HTTP"),
                        "kube-apiserver": (node_ip, ports["apiserver"], "/livez", "HTTPS"),
                        "kube-controller-manager": ("127.0.0.1", ports["controller-manager"], "/healthz", "HTTPS"),
                        "kube-scheduler": ("127.0.0.1", ports["scheduler"], "/healthz", "HTTPS")}[comp]
        host, port, path, scheme = probe_target
        # kubeadm's generous liveness settings: a loaded laptop must not see its API server killed.
        liveness = {"httpGet": {"host": host, "port": port, "path": path, "scheme": scheme},
                    "initialDelaySeconds": 10, "periodSeconds": 10, "timeoutSeconds": 15, "failureThreshold": 8}
        container = {"name": comp, "image": image, "imagePullPolicy": "IfNotPresent", "command": cmd,
                     "livenessProbe": liveness,
                     "resources": {"requests": {"cpu": STATIC_CPU[comp]}},
                     "volumeMounts": [{"name": n, "mountPath": path, "readOnly": ro}
                                      for n, path, _, ro in STATIC_VOLUMES[comp]]}
        if comp == "kube-apiserver":
            container["readinessProbe"] = {"httpGet": {"host": host, "port": port, "path": "/readyz", "scheme": scheme},
                                           "periodSeconds": 1, "timeoutSeconds": 15, "failureThreshold": 3}
        return {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": comp, "namespace": "kube-system",
                         "labels": {"component": comp, "tier": "control-plane"}},
            # kubeadm leaves the default 30 s: the API server then takes 30-40 s to come back
            # after an edit, as its graceful shutdown outlasts it (it drains its requests in
            # milliseconds, then waits to be killed); a lab has no requests to drain.
            "spec": {"hostNetwork": True, "priorityClassName": "system-node-critical",
                     "terminationGracePeriodSeconds": 1 if comp == "kube-apiserver" else 5,
                     "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
                     "containers": [container],
                     "volumes": [{"name": n, "hostPath": {"path": path, "type": kind}}
                                 for n, path, kind, _ in STATIC_VOLUMES[comp]]},
        }

    @property
    def original_manifests(self) -> Path:
        """ckalab's own versions of the static pod manifests, outside what the node sees."""
        return self.dir / "manifests.orig"

    def _write_static_pods(self, commands: dict[str, list[str]], ports: dict[str, int], node_ip: str,
                           progress: Progress) -> None:
        """The controlplane node's static pods. A manifest already there stays as it is (a
        learner's edit is never overwritten); only a process-mode description is replaced."""
        d = self.etc / "manifests"
        d.mkdir(parents=True, exist_ok=True)
        for comp in CONTROL_PLANE:
            text = STATIC_HEADER + yaml.safe_dump(self._static_pod(comp, commands[comp], ports, node_ip),
                                                  sort_keys=False)
            cur = d / f"{comp}.yaml"
            # Replaced: a missing file, a process-mode description, or ckalab's own earlier
            # version that nobody edited (a newer ckalab may write it differently).
            if home.replace_unless_edited(cur, text, self.original_manifests / f"{comp}.yaml",
                                          ours=lambda b: b.startswith(PROCESS_HEADER.encode())):
                progress(f"  keeping your edited {cur.relative_to(self.dir)} "
                         f"('{command('restore-manifests', self.name)}' brings ckalab's back)")

    def restore_manifests(self) -> list[str]:
        """Put ckalab's static pod manifests back; a learner's edited copy is kept aside in
        manifests.edited/ (outside the kubelet's directory, or it would run it too). On real
        nodes each node's kubelet config too (restarting that kubelet)."""
        orig = self.original_manifests
        if not orig.is_dir():
            raise CkalabError(f"Cluster '{self.name}' has no original manifests in {orig}: they are "
                              f"written by '{up_command(self.name)} --nodes real'.")
        done, changed = [], []
        for src in sorted(orig.glob("*.yaml")):
            cur = self.etc / "manifests" / src.name
            if cur.exists() and cur.read_bytes() == src.read_bytes():
                continue
            aside = self._set_aside(cur)
            done.append(f"{cur} restored; your version is kept in {aside}" if aside
                        else f"{cur} restored (it was missing)")
            changed.append((src, cur))
        self.write_manifests({cur: src.read_bytes() for src, cur in changed})
        if self._real_mode():  # and the nodes' kubelet configs (the kubelet-security task edits one)
            done += [m for node in self._real_nodes().names()
                     if (m := self._real_nodes().node(node).restore_kubelet_config())]
        return done

    def write_manifests(self, texts: dict[Path, bytes]) -> None:
        """Replace static pod manifests of the controlplane node (ckalab's own writes, not a
        learner's edit). On real nodes the changed ones are removed first and written once the
        kubelet has let go of the old pods: the API server answers again about 6 s later,
        instead of 15-17 s for a file replaced in place (docs/real-nodes.md)."""
        changed = {p: t for p, t in texts.items() if not (p.exists() and p.read_bytes() == t)}
        if changed and self._real_mode():
            for path in changed:
                path.unlink(missing_ok=True)
            self._real_nodes().control_plane.forget_static_pods([p.stem for p in changed])
        for path, text in changed.items():
            home.write_atomic(path, text)

    def mark_node_watchers_stale(self) -> None:
        """The API server or etcd was restored: the real nodes' kube-proxy and kube-router are to
        start their watches afresh (refresh_node_watchers) rather than wait out client-go's back-off."""
        if self._real_mode():
            self._real_nodes().mark_watchers_stale()

    def refresh_node_watchers(self) -> bool:
        """Restart the real nodes' kube-proxy and kube-router if marked stale (True then)."""
        return self._real_mode() and self._real_nodes().refresh_watchers()

    def runs_manifest(self, component: str) -> bool:
        """Whether the controlplane's kubelet runs `component` with the command line its static
        pod manifest has now (the one container of that name running, started with it)."""
        try:  # polled while a restore waits: libyaml's loader
            pod = yaml.load((self.etc / "manifests" / f"{component}.yaml").read_text(), Loader=home.YAML_LOADER)  # noqa: S506
            c = pod["spec"]["containers"][0]
            want = [*(c.get("command") or []), *(c.get("args") or [])]
        except (OSError, yaml.YAMLError, KeyError, IndexError, TypeError):
            return False
        return self._real_nodes().control_plane.running_command(component) == want

    def _set_aside(self, manifest: Path) -> Path | None:
        """Copy a learner's edited static pod manifest to manifests.edited/ (never deleted)."""
        orig = self.original_manifests / manifest.name
        try:
            text = manifest.read_bytes()
        except FileNotFoundError:
            return None
        if text.startswith(PROCESS_HEADER.encode()) or (orig.exists() and orig.read_bytes() == text):
            return None
        aside = self.dir / "manifests.edited" / f"{manifest.stem}.{time.strftime('%Y%m%d-%H%M%S')}.yaml"
        aside.parent.mkdir(exist_ok=True)
        shutil.copy2(manifest, aside)
        return aside

    def _write_manifests(self, commands: dict[str, list[str]]) -> None:
        d = self.etc / "manifests"
        d.mkdir(parents=True, exist_ok=True)
        for comp in CONTROL_PLANE:
            self._set_aside(d / f"{comp}.yaml")  # back from real nodes: an edited one is kept
        header = ("# Written by ckalab's local backend. On a kubeadm node the kubelet runs this as a\n"
                  "# static Pod; here ckalab runs the same command line as a process on this machine.\n")
        for comp, cmd in commands.items():
            if comp == "kwok":
                continue  # not a control-plane component; it stands in for the kubelets
            image = "registry.k8s.io/etcd:3.6" if comp == "etcd" else f"registry.k8s.io/{comp}:{build.K8S_VERSION}"
            pod = {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": comp, "namespace": "kube-system",
                             "labels": {"component": comp, "tier": "control-plane"}},
                # kubeadm leaves the default 30 s: the API server then takes 30-40 s to come back
            # after an edit, as its graceful shutdown outlasts it; a lab has no requests to drain.
            "spec": {"hostNetwork": True, "priorityClassName": "system-node-critical",
                     "terminationGracePeriodSeconds": 5,
                         "containers": [{"name": comp, "image": image, "command": cmd}]},
            }
            home.write_atomic(d / f"{comp}.yaml", header + yaml.safe_dump(pod, sort_keys=False))

    def _prepare(self, ports: dict[str, int]) -> None:
        for sub in ("logs", "run", "var/lib/etcd"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        (self.dir / "var/lib/etcd").chmod(0o700)  # etcd refuses a data dir others can read
        kpki.generate(self.etc, NODE, ADVERTISE)
        server = f"https://{ADVERTISE}:{ports['apiserver']}"
        kpki.write_kubeconfigs(self.etc, server)
        pki = self.etc / "pki"
        ca = (kpki.pki.load_key(pki / "ca.key"), kpki.pki.load_cert(pki / "ca.crt"))
        # kwok stands in for every kubelet; it is not part of kubeadm's layout, so it lives outside etc/.
        kpki.write_kubeconfig(self.dir / "kwok.conf", server, ca, "kwok", "kwok-controller", ("system:masters",))

    # --- processes -------------------------------------------------------------------------------
    def _pidfile(self, comp: str) -> Path:
        return self.dir / "run" / f"{comp}.pid"

    def _log(self, comp: str) -> Path:
        return self.dir / "logs" / f"{comp}.log"

    def _recorded(self, comp: str) -> int | None:
        """The pid in the component's pid file: a hint only, verified before any use."""
        try:
            return int(json.loads(self._pidfile(comp).read_text())["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _processes(self) -> dict[str, list[int]]:
        """component -> live pids of this cluster, the recorded one first, whatever the pid files say."""
        found = procs.find(self.dir, COMPONENTS)
        for comp, pids in found.items():
            rec = self._recorded(comp)
            if rec in pids:
                pids.remove(rec)
                pids.insert(0, rec)
        return found

    def _owned(self, pid: int, comp: str) -> bool:
        return procs.component_of(pid, self.dir, COMPONENTS) == comp

    def _start(self, comp: str, cmd: list[str], binary: Path) -> int:
        with open(self._log(comp), "ab") as log:
            log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} starting {comp}\n".encode())
            log.flush()
            # The markers in its environment let `down` find it even without its pid file.
            proc = subprocess.Popen([str(binary), *cmd[1:]], stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, cwd=self.dir, start_new_session=True,
                                    env=procs.marker_env(self.dir, comp))
        self._record(comp, proc.pid, binary)
        return proc.pid

    def _record(self, comp: str, pid: int, binary: Path | str) -> None:
        home.write_atomic(self._pidfile(comp), json.dumps({"pid": pid, "binary": str(binary)}))

    def _terminate(self, comp: str, pids: list[int], timeout: float = 15.0) -> None:
        """SIGTERM, then SIGKILL after `timeout`; each pid is checked to be this cluster's `comp`
        right before it is signalled, so a recycled pid is never hit."""
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            alive = [p for p in pids if self._owned(p, comp)]
            if not alive:
                return
            for pid in alive:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            try:
                wait_for(lambda: not any(procs.alive(p) for p in alive), wait, f"{comp} to stop", interval=0.1)
                return
            except WaitTimeout:
                continue
        raise CkalabError(f"{comp} of cluster '{self.name}' (pids {pids}) did not stop even after SIGKILL.")

    # --- health ----------------------------------------------------------------------------------
    def _server(self) -> str | None:
        ports = self.load_state().get("ports")
        return f"https://{ADVERTISE}:{ports['apiserver']}" if ports else None

    def _readyz(self, timeout: float = 2.0) -> bool:
        server = self._server()
        ca = self.etc / "pki" / "ca.crt"
        if not server or not ca.exists():
            return False
        ctx = ssl.create_default_context(cafile=str(ca))
        try:
            # /readyz is readable anonymously (system:public-info-viewer), as kubeadm's probes use it.
            with urllib.request.urlopen(f"{server}/readyz", context=ctx, timeout=timeout) as r:
                return r.status == 200
        except (OSError, ValueError):
            return False

    # --- lifecycle -------------------------------------------------------------------------------
    def _undo_labs(self, progress: Progress) -> None:
        """Before leaving real nodes: the processes run ckalab's command lines over the same etcd
        and certificates, so what a control-plane lab changed there is undone first, by its
        teardown, while the nodes still run (Secrets encrypted with a learner's key would be
        unreadable: the API server's storage never gets ready and the controller manager exits)."""
        from ... import labs  # labs build on clusters; only this step needs them

        # `up --nodes kwok` says kwok already; the teardowns (scripts too) must still see the
        # real nodes they act on.
        saved = os.environ.get("CKALAB_NODES")
        os.environ["CKALAB_NODES"] = "real"
        try:
            labs.contain(None, self, restore=False)
        except CkalabError as e:
            progress(f"Leaving real nodes without undoing every lab's changes (the cluster may not come up "
                     f"as processes): {e}")
        finally:
            if saved is None:
                os.environ.pop("CKALAB_NODES", None)
            else:
                os.environ["CKALAB_NODES"] = saved

    def _up(self, progress: Progress) -> None:
        state = self.load_state()  # a damaged cluster.json stops us before anything starts
        bins = build.ensure_binaries(progress)
        real = self._real_nodes()
        if real.enabled():
            return self._up_real(progress, state)
        if real.root.exists() and (real.running() or real.remembered()):
            if real.running():
                self._undo_labs(progress)
            real.forget(progress)  # `up --nodes kwok`: the control plane runs as processes again
            # kwok talked to the static-pod API server, which is gone: a fresh kwok meets the new
            # one at once (the old one's watches come back only after their back-off, which
            # kept its stand-in nodes NotReady past the wait on a loaded machine).
            kwok = self._processes().get("kwok", [])
            if kwok:
                self._terminate("kwok", kwok)
        found = self._processes()
        for comp, pids in found.items():
            if len(pids) > 1:  # left by a crash or by an older ckalab without the lock
                progress(f"Stopping {len(pids) - 1} extra {comp} process(es) of '{self.name}' "
                         f"(pids {', '.join(map(str, pids[1:]))}); keeping pid {pids[0]}.")
                self._terminate(comp, pids[1:])
        running = {c: found[c][0] if found.get(c) else None for c in COMPONENTS}
        for comp, pid in running.items():
            if pid and pid != self._recorded(comp):
                self._record(comp, pid, bins[comp])  # adopt a process whose pid file was lost
        if all(running.values()) and self._readyz():
            progress(f"Cluster '{self.name}' is already running (local backend).")
            return
        begin = time.monotonic()
        recorded = self._recorded_ports(state)
        # A live component holds its port, so ports only move when nothing of ours runs.
        if any(running.values()) and set(recorded) == set(PORT_NAMES):
            ports = recorded
        else:
            ports = self._ports(recorded, progress)
        self._prepare(ports)
        commands = self._commands(ports, bins)
        self._write_manifests(commands)
        self.save_state({"backend": self.backend, "name": self.name, "ports": ports,
                         "kubernetes": build.K8S_VERSION})
        progress(f"Starting the control plane of '{self.name}' (etcd, kube-apiserver, "
                 "kube-controller-manager, kube-scheduler, kwok) on 127.0.0.1 ...")
        fresh: set[str] = set()  # started by this `up`: if one of them exits, it will again
        api_ready = False

        def start(comp: str) -> None:
            running[comp] = self._start(comp, commands[comp], bins[comp])
            fresh.add(comp)

        for comp in COMPONENTS:
            if not running[comp] and comp not in AFTER_API:
                start(comp)

        def exited(comp: str) -> bool:
            """Whether `comp` has exited for good. One that ran before this `up` may have died
            meanwhile with its API server (the controller manager gives up on a lost one while it
            starts its controllers): it gets one fresh start, once the API server is ready."""
            if comp in fresh:
                return True
            if comp in AFTER_API and not api_ready:
                progress(f"  {comp} (pid {running[comp]}) exited while the control plane restarted; "
                         "starting it again once kube-apiserver is ready")
                running[comp] = None
                return False
            progress(f"  {comp} (pid {running[comp]}) exited while the control plane restarted; starting it again")
            start(comp)
            return False

        try:
            self._wait(self._readyz, 90, "kube-apiserver /readyz", running, exited)
            progress(f"  kube-apiserver ready after {time.monotonic() - begin:.1f}s")
            api_ready = True
            for comp in AFTER_API:
                if not running[comp]:
                    start(comp)
            self._bootstrap()
            self._wait_workloads_ready(running, exited)
        except WaitTimeout as exc:
            raise CkalabError(f"Cluster '{self.name}' did not become ready: {exc}\n\n"
                              + self.status().render()) from None
        progress(f"Cluster '{self.name}' is ready in {time.monotonic() - begin:.1f}s. "
                 f"kubeconfig: {self.kubeconfig}")

    def _up_real(self, progress: Progress, state: dict) -> None:
        """Real nodes: the controlplane node's kubelet runs etcd, kube-apiserver,
        kube-controller-manager and kube-scheduler as static pods; node01 is a real worker;
        kwok (a process) keeps node02."""
        real = self._real_nodes()
        found = self._processes()
        for comp in CONTROL_PLANE:  # switching from the process mode: the kubelet takes over
            if found.get(comp):
                progress(f"Stopping the {comp} process: the controlplane node runs it as a static pod.")
                self._terminate(comp, found[comp])
                self._pidfile(comp).unlink(missing_ok=True)
        recorded = self._recorded_ports(state)
        # kwok (node02) keeps running across the switch and holds its own port.
        ports = (recorded if real.running() and set(recorded) == set(PORT_NAMES)
                 else self._ports(recorded, progress, frozenset({"kwok"} if found.get("kwok") else ())))
        self._prepare(ports)
        self.save_state({"backend": self.backend, "name": self.name, "ports": ports,
                         "kubernetes": build.K8S_VERSION, "nodes": "real"})
        node_ip = real.control_plane.ip
        bins = build.ensure_binaries(progress)
        self._write_static_pods(self._commands(ports, bins, node_ip), ports, node_ip, progress)
        start = time.monotonic()
        if not real.running() or not self._readyz():
            progress(f"Starting '{self.name}' on real nodes: the controlplane node's kubelet runs the "
                     "control plane as static pods ...")
        try:
            real.start_control_plane(progress)
        except BaseException as exc:
            self._fall_back(progress, exc)
        broken = self._wait_static_api(real)
        if broken:
            raise broken
        self._bootstrap()
        took_over = real.adopt_control_plane()
        try:
            took_over |= real.start_workers(progress)
        except BaseException as exc:
            self._fall_back(progress, exc)
        pids = {"kwok": (found.get("kwok") or [None])[0]}
        if took_over and pids["kwok"]:
            # kwok renews the leases of every node it once managed until it restarts: it would
            # fight the real kubelets over them.
            self._terminate("kwok", [pids["kwok"]])
            pids["kwok"] = None
        if not pids["kwok"]:
            pids["kwok"] = self._start("kwok", self._commands(ports, bins)["kwok"], bins["kwok"])
        try:
            self._wait_workloads_ready(pids, lambda comp: True)
        except WaitTimeout as exc:
            raise CkalabError(f"Cluster '{self.name}' did not become ready: {exc}\n\n"
                              + self.status().render()) from None
        progress(f"Cluster '{self.name}' is ready in {time.monotonic() - start:.1f}s (real nodes "
                 f"controlplane and node01, kwok node02). kubeconfig: {self.kubeconfig}")

    def _fall_back(self, progress: Progress, exc: BaseException):
        """A real node that cannot start leaves nothing half-done: remove what it started, run
        the control plane as processes with kwok nodes again, and say what failed."""
        from .. import nodes

        progress("Real node setup failed: removing what it started; the cluster goes back to its "
                 "control plane as processes and kwok nodes.")
        self._real_nodes().forget(lambda m: None)
        saved = os.environ.get(nodes.ENV)
        os.environ[nodes.ENV] = "kwok"
        try:
            self._up(progress)
        finally:
            if saved is None:
                os.environ.pop(nodes.ENV, None)
            else:
                os.environ[nodes.ENV] = saved
        raise exc

    def _wait_static_api(self, real, timeout: float = 180) -> CkalabError | None:
        """The API server is a static pod now: wait for it through the relay. A node that died
        falls back to processes (see _fall_back); an API server that does not come is reported
        with what its container says, and the nodes stay up: a learner's broken manifest is
        fixed on the node (or by restore-manifests), and the kubelet starts it again."""
        cp = real.control_plane

        def step():
            dead = cp.dead_components()
            if dead:
                return ("dead", f"{', '.join(dead)} exited")
            if self._readyz():
                return True
            apiserver = [c for c in cp.containers() if c.get("metadata", {}).get("name") == "kube-apiserver"]
            # A container that exited after a restart already: a broken manifest, not a slow start.
            if apiserver and apiserver[0].get("state") == "CONTAINER_EXITED" and \
                    apiserver[0].get("metadata", {}).get("attempt", 0) >= 1:
                return ("exited", "its container keeps exiting")
            return False

        try:
            got = wait_for(step, timeout, "kube-apiserver /readyz")
        except WaitTimeout:
            got = ("timeout", f"not ready after {timeout:.0f}s{self._static_pods_said(cp)}")
        if got is True:
            return None
        if got[0] == "dead":
            tails = "\n".join(f"  {line}" for comp in cp.dead_components()
                              for line in _tail(cp.p(f"logs/{comp.split('/')[1]}.log")))
            self._fall_back(lambda m: None, CkalabError(f"Real node {cp.name}: {got[1]}:\n{tails}"))
        return CkalabError(f"Cluster '{self.name}': the API server did not become ready ({got[1]}).\n\n"
                           + self.status().render())

    @staticmethod
    def _static_pods_said(cp) -> str:
        """For an API server that runs but never gets ready: the newest etcd and kube-apiserver
        containers' states and last log lines (what `crictl ps -a` / `crictl logs` show on the
        node), so the cause is in the message rather than behind a shell."""
        lines, containers = [], cp.containers()
        for comp in ("etcd", "kube-apiserver"):
            mine = [c for c in containers if c.get("metadata", {}).get("name") == comp]
            if not mine:
                lines.append(f"{comp}: no container")
                continue
            c = mine[0]
            lines.append(f"{comp}: container {c['id'][:13]} {c.get('state', '?')}, attempt "
                         f"{c.get('metadata', {}).get('attempt', 0)}; its log ends:")
            lines += [f"  {line}" for line in cp.container_logs(c["id"], 8)]
        return ";\n" + "\n".join(lines) if lines else ""

    def _wait(self, predicate, timeout: float, what: str, pids: dict[str, int],
              exited: Callable[[str], bool]) -> None:
        """wait_for, except that a component which exits meanwhile (and `exited` says it is for
        good) ends the wait at once with its log tail: a bad flag or a taken port will not fix
        itself in 90 s."""
        def step():
            dead = [c for c, pid in pids.items() if pid and not procs.alive(pid)]
            final = [f"{c} (pid {pids[c]})" for c in dead if exited(c)]
            return ("exited", final) if final else predicate()

        got = wait_for(step, timeout, what)
        if isinstance(got, tuple) and got[0] == "exited":
            raise CkalabError(f"Cluster '{self.name}' did not start: {', '.join(got[1])} exited while "
                              f"waiting for {what}.\n\n" + self.status().render())

    def _bootstrap(self) -> None:
        """What kubeadm does after the API server is up: admin binding, then the nodes."""
        from ...kube import Kube

        root = Kube(self.etc / "super-admin.conf")
        root.apply({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": kpki.ADMINS_GROUP},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": kpki.ADMINS_GROUP}],
        })
        real = self._real_nodes().names()
        for node in (NODE, *WORKERS):
            if node in real:
                continue  # a kubelet registers it
            try:
                registered = root.core.read_node(node)
            except Exception:  # noqa: BLE001 - not there yet
                registered = None
            if registered and KWOK_ANNOTATION not in (registered.metadata.annotations or {}):
                # Registered by a real node's kubelet (real nodes before): kwok's stand-in
                # starts afresh, or the old kubelet's conditions would keep it NotReady.
                root.core.delete_node(node)
            labels = {"kubernetes.io/hostname": node, "kubernetes.io/os": "linux",
                      "kubernetes.io/arch": "amd64", "type": "kwok"}
            spec: dict = {}
            if self._real_nodes().enabled():
                # Pods of the labs must land where containers run: the kwok node takes none.
                spec["taints"] = [{"key": "ckalab.io/kwok", "value": "true", "effect": "NoSchedule"}]
            if node == NODE:
                labels["node-role.kubernetes.io/control-plane"] = ""
                spec["taints"] = [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]
            root.apply({"apiVersion": "v1", "kind": "Node",
                        "metadata": {"name": node, "labels": labels, "annotations": {KWOK_ANNOTATION: "fake"}},
                        "spec": spec})

    def _wait_workloads_ready(self, pids: dict[str, int], exited: Callable[[str], bool]) -> None:
        from ...kube import Kube

        k = Kube(self.kubeconfig)

        def nodes_ready():
            nodes = k.core.list_node().items
            ready = [n for n in nodes if any(c.type == "Ready" and c.status == "True"
                                             for c in (n.status.conditions or []))]
            return len(ready) >= 1 + len(WORKERS)

        self._wait(nodes_ready, 60, "every node to be Ready", pids, exited)
        # Pods need the namespace's default ServiceAccount, made by the controller manager.
        self._wait(lambda: k.core.read_namespaced_service_account("default", "default"), 60,
                   "the 'default' ServiceAccount (kube-controller-manager)", pids, exited)

    def _down(self, progress: Progress) -> None:
        self._real_nodes().down(progress)
        # Found by their markers, not by the pid files: this also stops what a crashed or
        # concurrent `up` left behind, and never another cluster's processes.
        found = self._processes()
        stopped = []
        for comp in reversed(COMPONENTS):
            pids = found.get(comp, [])
            if pids:
                self._terminate(comp, pids)
                stopped.append(comp if len(pids) == 1 else f"{comp} (x{len(pids)})")
            self._pidfile(comp).unlink(missing_ok=True)
        if stopped:
            progress(f"Stopped {', '.join(stopped)} of cluster '{self.name}'. "
                     f"State kept in {self.dir}; '{up_command(self.name)}' resumes it.")
        else:
            progress(f"Cluster '{self.name}' is not running; nothing to stop.")

    # --- real nodes: experimental and opt-in (ckalab/cluster/nodes, docs/real-nodes.md) --------------
    # On real nodes pods run (node02, kwok's, takes none): exec and traffic as on kind, and
    # kube-router enforces NetworkPolicy.
    REAL_FEATURES = frozenset({"static-pods", "node-shell", "exec", "traffic", "netpol-enforcement",
                               "private-registry"})

    def offers(self, feature: str) -> bool:
        return super().offers(feature) or (feature in self.REAL_FEATURES and self._real_mode())

    def offered(self) -> frozenset[str]:
        return super().offered() | (self.REAL_FEATURES if self._real_mode() else frozenset())

    def publish_private_image(self, image: str, username: str, password: str) -> str:
        if not self._real_mode():
            return super().publish_private_image(image, username, password)
        from ..nodes import private_registry

        with self._lifecycle("registry", lambda m: None):  # not while `up` or `down` runs
            return private_registry.for_nodes(self._real_nodes()).publish(image, username, password)

    def shell(self, node: str, command: list[str] | None = None) -> tuple[list[str], dict[str, str]]:
        real = self._real_nodes()
        if not real.enabled():
            raise CkalabError(f"Cluster '{self.name}' runs kwok nodes, which have no shell: "
                              f"'{up_command(self.name)} --nodes real' (as root) starts real ones.")
        if node not in real.names():
            raise CkalabError(f"No real node '{node}' in cluster '{self.name}' (real nodes: "
                              f"{', '.join(real.names())}; node02 is a kwok node).")
        return real.node(node).shell(command)

    def _real_mode(self) -> bool:
        """Real nodes asked for or remembered, without importing their module (and through it
        cryptography): `status` runs in every cold `ckalab check`."""
        wanted = os.environ.get("CKALAB_NODES", "").strip().lower()
        if wanted in ("real", "kwok"):
            return wanted == "real"
        mode = self.dir / "nodes" / "mode"
        return mode.exists() and mode.read_text().strip() == "real"

    def _real_nodes(self):
        """The real kubelets of this cluster; none unless `--nodes real` / CKALAB_NODES=real."""
        from .. import nodes

        return nodes.for_cluster(self)

    def status(self) -> ClusterStatus:
        if not self.etc.exists():
            return ClusterStatus(self.name, self.backend, "absent",
                                 message=f"Cluster '{self.name}' does not exist yet: run '{up_command(self.name)}'.")
        found = self._processes()
        if self._real_mode():
            return self._status_real(self._real_nodes(), found)
        comps = []
        for comp in COMPONENTS:
            pids, rec = found.get(comp, []), self._recorded(comp)
            if pids:
                comps.append(ComponentStatus(comp, "running", pids[0], str(self._log(comp))))
            elif rec:
                comps.append(ComponentStatus(comp, "exited", rec, str(self._log(comp)), _tail(self._log(comp))))
            else:
                comps.append(ComponentStatus(comp, "stopped"))
        extra = sorted(p for pids in found.values() for p in pids[1:])
        states = {c.state for c in comps}
        if states == {"running"} and not extra:
            state = "running" if self._readyz() else "degraded"
        elif states == {"stopped"} and not extra:
            state = "stopped"
        else:
            state = "degraded"
        up = up_command(self.name)
        msg = {"stopped": f"Cluster '{self.name}' is stopped: run '{up}'.",
               "degraded": f"Cluster '{self.name}' is degraded: see the logs above, then run '{up}' "
                           "to restart what stopped."}.get(state, "")
        if extra:
            msg += (f"\n{len(extra)} more process(es) of this cluster run untracked (pids "
                    f"{', '.join(map(str, extra))}): '{up}' keeps one of each component, "
                    f"'{command('down', self.name)}' stops them all.")
        return ClusterStatus(self.name, self.backend, state, self._server(), str(self.kubeconfig), comps, msg,
                             mode=PROCESS_MODE)

    def _status_real(self, real, found: dict[str, list[int]]) -> ClusterStatus:
        """Real nodes: each node's kubelet and containerd, the static pods' containers as the
        controlplane's crictl shows them (with the log tail of one that exited), and kwok."""
        nodes = real.processes()
        comps = []
        for name in real.names():
            for part in ("containerd", "kubelet", "kube-proxy", "kube-router"):
                pids = nodes.get(f"{name}/{part}", [])
                comps.append(ComponentStatus(f"{name}/{part}", "running" if pids else "stopped",
                                             pids[0] if pids else None))
        cp = real.control_plane
        containers = cp.containers() if nodes.get(f"{cp.name}/containerd") else []
        for comp in CONTROL_PLANE:
            mine = [c for c in containers if c.get("metadata", {}).get("name") == comp]
            if not mine:
                comps.append(ComponentStatus(f"{comp} (static pod)", "stopped"))
                continue
            c = mine[0]
            if c.get("state") == "CONTAINER_RUNNING":
                comps.append(ComponentStatus(f"{comp} (static pod)", "running"))
            else:
                comps.append(ComponentStatus(
                    f"{comp} (static pod)", "exited", log=f"crictl logs {c['id'][:13]} (on the controlplane node)",
                    log_tail=cp.container_logs(c["id"])))
        kwok = found.get("kwok", [])
        comps.append(ComponentStatus("kwok", "running" if kwok else "stopped", kwok[0] if kwok else None))
        states = {c.state for c in comps}
        up = up_command(self.name)
        if states == {"running"}:
            state = "running" if self._readyz() else "degraded"
        elif states == {"stopped"}:
            state = "stopped"
        else:
            state = "degraded"
        msg = {"stopped": f"Cluster '{self.name}' is stopped: run '{up}'.",
               "degraded": (f"Cluster '{self.name}' is degraded. A static pod that exited restarts when "
                            f"its manifest in {self.etc / 'manifests'} is fixed (on the node: "
                            f"'{command('ssh', self.name)} controlplane'); "
                            f"'{command('restore-manifests', self.name)}' puts ckalab's manifests back; "
                            f"'{up}' restarts stopped nodes.")}.get(state, "")
        return ClusterStatus(self.name, self.backend, state, self._server(), str(self.kubeconfig), comps, msg,
                             mode=REAL_MODE)


def _tail(path: Path, n: int = 10) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            return f.read().decode(errors="replace").splitlines()[-n:]
    except OSError:
        return []
