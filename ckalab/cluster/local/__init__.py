"""The local backend: a real control plane (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler) run as processes on this machine, with kwok providing the nodes.

Layout under $CKALAB_HOME/clusters/<name>/ mirrors a kubeadm control plane:
  etc/kubernetes/pki/...            certificates and keys (kubeadm names)
  etc/kubernetes/*.conf             admin, super-admin, controller-manager, scheduler kubeconfigs
  etc/kubernetes/manifests/*.yaml   "static Pod" manifests: the exact command line each process runs
  var/lib/etcd                      etcd data (kept across down/up)
  logs/<component>.log, run/<component>.pid

Containers do not really run here: kwok marks pods Running on fake nodes, so exec, logs and
real network traffic between pods are not available (use the kind backend for those).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

import yaml

from ...errors import CkalabError, ClusterNotRunning
from ...waiting import WaitTimeout, wait_for
from ..base import Cluster, ClusterStatus, ComponentStatus, Progress, up_command
from . import build
from . import pki as kpki

NODE = "controlplane"
WORKERS = ("node01", "node02")
ADVERTISE = "127.0.0.1"  # everything listens on loopback only
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
PORT_NAMES = ("etcd", "etcd-peer", "etcd-metrics", "apiserver", "controller-manager", "scheduler", "kwok")
KWOK_ANNOTATION = "kwok.x-k8s.io/node"


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def _proc_alive(pid: int, binary: str) -> bool:
    """True when `pid` is a live (non-zombie) process running `binary`: never signal a stranger."""
    try:
        os.waitpid(pid, os.WNOHANG)  # reap it if it was our child and has died
    except ChildProcessError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
            return False
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except (OSError, IndexError, UnicodeDecodeError):
        return False
    return argv0 == binary


class LocalCluster(Cluster):
    backend = "local"

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
        p = Path(path)
        if not p.is_absolute():
            p = self.etc / "pki" / p
        try:
            return p.read_bytes()
        except OSError as exc:
            raise CkalabError(f"Cannot read {p}: {exc.strerror}") from None

    def manifest(self, component: str) -> dict:
        p = self.etc / "manifests" / f"{component}.yaml"
        if not p.exists():
            raise ClusterNotRunning(f"No manifest at {p}: run '{up_command(self.name)}' first.")
        return yaml.safe_load(p.read_text())

    # --- configuration ---------------------------------------------------------------------------
    def _ports(self, state: dict) -> dict[str, int]:
        ports = state.get("ports") or {}
        if set(ports) != set(PORT_NAMES) or not all(_port_free(p) for p in ports.values()):
            ports = dict(zip(PORT_NAMES, _free_ports(len(PORT_NAMES))))
        return ports

    def _commands(self, ports: dict[str, int], bins: dict[str, Path]) -> dict[str, list[str]]:
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

    def _write_manifests(self, commands: dict[str, list[str]]) -> None:
        d = self.etc / "manifests"
        d.mkdir(parents=True, exist_ok=True)
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
                "spec": {"hostNetwork": True, "priorityClassName": "system-node-critical",
                         "containers": [{"name": comp, "image": image, "command": cmd}]},
            }
            (d / f"{comp}.yaml").write_text(header + yaml.safe_dump(pod, sort_keys=False))

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

    def _recorded(self, comp: str) -> tuple[int, str] | None:
        try:
            rec = json.loads(self._pidfile(comp).read_text())
            return int(rec["pid"]), rec["binary"]
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _running_pid(self, comp: str) -> int | None:
        rec = self._recorded(comp)
        return rec[0] if rec and _proc_alive(*rec) else None

    def _start(self, comp: str, cmd: list[str], binary: Path) -> None:
        log = open(self._log(comp), "ab")
        log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} starting {comp}\n".encode())
        log.flush()
        proc = subprocess.Popen([str(binary), *cmd[1:]], stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, cwd=self.dir, start_new_session=True)
        log.close()
        self._pidfile(comp).write_text(json.dumps({"pid": proc.pid, "binary": str(binary)}))

    def _stop(self, comp: str, timeout: float = 15.0) -> bool:
        rec = self._recorded(comp)
        if rec and _proc_alive(*rec):
            pid = rec[0]
            os.kill(pid, signal.SIGTERM)
            try:
                wait_for(lambda: not _proc_alive(*rec), timeout, f"{comp} to stop", interval=0.1)
            except WaitTimeout:
                os.kill(pid, signal.SIGKILL)
                wait_for(lambda: not _proc_alive(*rec), 5, f"{comp} to be killed", interval=0.1)
            self._pidfile(comp).unlink(missing_ok=True)
            return True
        self._pidfile(comp).unlink(missing_ok=True)
        return False

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
    def up(self, progress: Progress = print) -> None:
        bins = build.ensure_binaries(progress)
        running = {c: self._running_pid(c) for c in COMPONENTS}
        if all(running.values()) and self._readyz():
            progress(f"Cluster '{self.name}' is already running (local backend).")
            return
        start = time.monotonic()
        state = self.load_state()
        # Only re-pick ports when nothing of ours is running (a live process holds its port).
        ports = state.get("ports") if any(running.values()) else self._ports(state)
        self._prepare(ports)
        commands = self._commands(ports, bins)
        self._write_manifests(commands)
        self.save_state({"backend": self.backend, "name": self.name, "ports": ports,
                         "kubernetes": build.K8S_VERSION})
        progress(f"Starting the control plane of '{self.name}' (etcd, kube-apiserver, "
                 "kube-controller-manager, kube-scheduler, kwok) on 127.0.0.1 ...")
        for comp in COMPONENTS:
            if not running[comp]:
                self._start(comp, commands[comp], bins[comp])
        try:
            wait_for(self._readyz, 90, "kube-apiserver /readyz")
            progress(f"  kube-apiserver ready after {time.monotonic() - start:.1f}s")
            self._bootstrap()
            self._wait_workloads_ready()
        except WaitTimeout as exc:
            raise CkalabError(f"Cluster '{self.name}' did not become ready: {exc}\n\n"
                              + self.status().render()) from None
        progress(f"Cluster '{self.name}' is ready in {time.monotonic() - start:.1f}s. "
                 f"kubeconfig: {self.kubeconfig}")

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
        for node in (NODE, *WORKERS):
            labels = {"kubernetes.io/hostname": node, "kubernetes.io/os": "linux",
                      "kubernetes.io/arch": "amd64", "type": "kwok"}
            spec: dict = {}
            if node == NODE:
                labels["node-role.kubernetes.io/control-plane"] = ""
                spec["taints"] = [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]
            root.apply({"apiVersion": "v1", "kind": "Node",
                        "metadata": {"name": node, "labels": labels, "annotations": {KWOK_ANNOTATION: "fake"}},
                        "spec": spec})

    def _wait_workloads_ready(self) -> None:
        from ...kube import Kube

        k = Kube(self.kubeconfig)

        def nodes_ready():
            nodes = k.core.list_node().items
            ready = [n for n in nodes if any(c.type == "Ready" and c.status == "True"
                                             for c in (n.status.conditions or []))]
            return len(ready) >= 1 + len(WORKERS)

        wait_for(nodes_ready, 60, "the kwok nodes to be Ready")
        # Pods need the namespace's default ServiceAccount, made by the controller manager.
        wait_for(lambda: k.core.read_namespaced_service_account("default", "default"), 60,
                 "the 'default' ServiceAccount (kube-controller-manager)")

    def down(self, progress: Progress = print) -> None:
        stopped = [c for c in reversed(COMPONENTS) if self._stop(c)]
        if stopped:
            progress(f"Stopped {', '.join(stopped)} of cluster '{self.name}'. "
                     f"State kept in {self.dir}; 'ckalab up' resumes it.")
        else:
            progress(f"Cluster '{self.name}' is not running; nothing to stop.")

    def status(self) -> ClusterStatus:
        if not self.etc.exists():
            return ClusterStatus(self.name, self.backend, "absent",
                                 message=f"Cluster '{self.name}' does not exist yet: run '{up_command(self.name)}'.")
        comps = []
        for comp in COMPONENTS:
            rec = self._recorded(comp)
            if rec and _proc_alive(*rec):
                comps.append(ComponentStatus(comp, "running", rec[0], str(self._log(comp))))
            elif rec:
                comps.append(ComponentStatus(comp, "exited", rec[0], str(self._log(comp)), _tail(self._log(comp))))
            else:
                comps.append(ComponentStatus(comp, "stopped"))
        states = {c.state for c in comps}
        if states == {"running"}:
            state = "running" if self._readyz() else "degraded"
        elif states == {"stopped"}:
            state = "stopped"
        else:
            state = "degraded"
        up = up_command(self.name)
        msg = {"stopped": f"Cluster '{self.name}' is stopped: run '{up}'.",
               "degraded": f"Cluster '{self.name}' is degraded: see the logs above, then run '{up}' "
                           "to restart what stopped."}.get(state, "")
        return ClusterStatus(self.name, self.backend, state, self._server(), str(self.kubeconfig), comps, msg)


def _tail(path: Path, n: int = 10) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            return f.read().decode(errors="replace").splitlines()[-n:]
    except OSError:
        return []
