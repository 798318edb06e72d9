"""The kind backend: a real multi-node cluster in Docker, for machines that have a Docker engine.

The control-plane node is a kubeadm cluster, so PKI inspection reads /etc/kubernetes inside
the node with `docker exec`, exactly where the learner looks on an exam node.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import yaml

from .. import labs
from ..errors import CkalabError, ClusterNotRunning
from .base import Cluster, ClusterStatus, ComponentStatus, Progress, docker_works, up_command

# kind/ sits beside labs/: in the checkout, or in the package data of an installed wheel.
CONFIG = labs.data_root() / "kind" / "cluster.yaml"
# What keeps lab pods from setting this computer's clock (kind nodes share it): a seccomp profile
# on every node and the admission policies that give it to pods (see the policy file's header).
NOCLOCK_PROFILE = labs.data_root() / "kind" / "noclock.json"
NOCLOCK_POLICY = labs.data_root() / "kind" / "noclock-policy.yaml"
SECCOMP_DIR = "/var/lib/kubelet/seccomp/ckalab"
KIND_VERSION = "v0.33.0"


def _run(cmd: list[str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


class KindCluster(Cluster):
    backend = "kind"
    features = frozenset({"exec", "traffic", "netpol-enforcement", "node-files", "static-pods", "node-shell"})

    @classmethod
    def usable(cls) -> bool:
        return bool(shutil.which("kind")) and docker_works()

    @property
    def kubeconfig(self) -> Path:
        return self.dir / "kubeconfig"

    @property
    def node(self) -> str:
        return f"{self.name}-control-plane"

    # kind names its node containers <cluster>-control-plane, <cluster>-worker, <cluster>-worker2.
    NODE_CONTAINERS = {"controlplane": "control-plane", "node01": "worker", "node02": "worker2"}

    def shell(self, node: str, command: list[str] | None = None) -> tuple[list[str], dict[str, str]]:
        if node not in self.NODE_CONTAINERS:
            raise CkalabError(f"No node '{node}' in cluster '{self.name}' (nodes: {', '.join(self.NODE_CONTAINERS)}).")
        return (["docker", "exec", "-it", f"{self.name}-{self.NODE_CONTAINERS[node]}", *(command or ["bash", "-l"])],
                dict(os.environ))

    @property
    def pki_dir(self) -> str:
        return "/etc/kubernetes/pki"

    def _require(self) -> None:
        if not shutil.which("kind"):
            raise CkalabError(f"'kind' is not installed: go install sigs.k8s.io/kind@{KIND_VERSION}, "
                              f"or use '{up_command(self.name)} --backend local'.")
        if not docker_works():
            raise CkalabError("Docker is not running ('docker info' failed): start Docker, "
                              f"or use '{up_command(self.name)} --backend local'.")

    def _exists(self) -> bool:
        out = _run(["kind", "get", "clusters"], 60)
        return self.name in out.stdout.split()

    def _up(self, progress: Progress) -> None:
        self._require()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.save_state({"backend": self.backend, "name": self.name})
        if self._exists():
            progress(f"Cluster '{self.name}' already exists (kind); exporting its kubeconfig.")
        else:
            progress(f"Creating kind cluster '{self.name}' from {CONFIG} (pulls the node image once) ...")
            out = _run(["kind", "create", "cluster", "--name", self.name, "--config", str(CONFIG),
                        "--kubeconfig", str(self.kubeconfig), "--wait", "180s"], 900)
            if out.returncode != 0:
                raise CkalabError(f"kind create cluster failed:\n{out.stderr[-3000:]}")
        out = _run(["kind", "export", "kubeconfig", "--name", self.name, "--kubeconfig", str(self.kubeconfig)])
        if out.returncode != 0:
            raise CkalabError(f"kind export kubeconfig failed:\n{out.stderr[-2000:]}")
        self._protect_clock()
        progress(f"Cluster '{self.name}' is ready. kubeconfig: {self.kubeconfig}")

    def _protect_clock(self) -> None:
        """The noclock profile on every node, then the policies that hand it out (idempotent:
        every `up` puts them back, a node added later included)."""
        from ..kube import Kube

        nodes = _run(["kind", "get", "nodes", "--name", self.name], 60).stdout.split()
        for node in nodes:
            out = subprocess.run(["docker", "exec", "-i", node, "sh", "-c",
                                  f"mkdir -p {SECCOMP_DIR} && cat > {SECCOMP_DIR}/noclock.json"],
                                 input=NOCLOCK_PROFILE.read_bytes(), capture_output=True, timeout=60)
            if out.returncode != 0:
                raise CkalabError(f"Could not install the clock profile on kind node {node}: "
                                  f"{out.stderr.decode()[-500:]}")
        Kube(self.kubeconfig).apply_all(d for d in yaml.safe_load_all(NOCLOCK_POLICY.read_text()) if d)

    def _down(self, progress: Progress) -> None:
        if not shutil.which("kind") or not self._exists():
            progress(f"Cluster '{self.name}' does not exist; nothing to delete.")
            return
        _run(["kind", "delete", "cluster", "--name", self.name])
        progress(f"Deleted kind cluster '{self.name}'.")

    def status(self) -> ClusterStatus:
        if not shutil.which("kind") or not docker_works():
            return ClusterStatus(self.name, self.backend, "stopped",
                                 message=f"kind or Docker is not available: start Docker, then '{up_command(self.name)}'.")
        if not self._exists():
            return ClusterStatus(self.name, self.backend, "absent",
                                 message=f"Cluster '{self.name}' does not exist: run '{up_command(self.name)} --backend kind'.")
        ps = _run(["docker", "ps", "--filter", f"label=io.x-k8s.kind.cluster={self.name}",
                   "--format", "{{.Names}} {{.State}}"], 60)
        comps = [ComponentStatus(n, "running" if s == "running" else "exited")
                 for n, s in (line.split(" ", 1) for line in ps.stdout.splitlines() if " " in line)]
        state = "running" if comps and all(c.state == "running" for c in comps) else "degraded"
        return ClusterStatus(self.name, self.backend, state, None, str(self.kubeconfig), comps)

    def read_file(self, path: str) -> bytes:
        if not path.startswith("/"):
            path = f"{self.pki_dir}/{path}"
        out = subprocess.run(["docker", "exec", self.node, "cat", path], capture_output=True, timeout=60)
        if out.returncode != 0:
            raise ClusterNotRunning(f"Cannot read {path} in {self.node}: {out.stderr.decode()[-500:]}")
        return out.stdout

    def manifest(self, component: str) -> dict:
        return yaml.safe_load(self.read_file(f"/etc/kubernetes/manifests/{component}.yaml"))
