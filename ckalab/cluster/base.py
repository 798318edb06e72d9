"""The interface every backend implements, and how a cluster name maps to its backend."""

from __future__ import annotations

import abc
import json
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from .. import home

Progress = Callable[[str], None]


@dataclass
class ComponentStatus:
    name: str
    state: str  # running | exited | stopped
    pid: int | None = None
    log: str | None = None
    log_tail: list[str] = field(default_factory=list)


@dataclass
class ClusterStatus:
    name: str
    backend: str
    state: str  # running | degraded | stopped | absent
    server: str | None = None
    kubeconfig: str | None = None
    components: list[ComponentStatus] = field(default_factory=list)
    message: str = ""
    mode: str = ""  # how the control plane and the nodes run (the local backend has two modes)

    def to_dict(self) -> dict:
        return asdict(self)

    def render(self) -> str:
        lines = [f"Cluster '{self.name}' ({self.backend} backend): {self.state}"]
        if self.server:
            lines.append(f"  server:     {self.server}")
        if self.kubeconfig:
            lines.append(f"  kubeconfig: {self.kubeconfig}")
        if self.mode:
            lines.append(f"  mode:       {self.mode}")
        for c in self.components:
            pid = f" (pid {c.pid})" if c.pid else ""
            lines.append(f"  {c.name:<38} {c.state}{pid}")
            if c.state == "exited" and c.log_tail:
                lines.append(f"    last lines of {c.log}:" if c.log else "    last lines of its log:")
                lines.extend(f"      {line}" for line in c.log_tail)
        if self.message:
            lines.append(self.message)
        return "\n".join(lines)


def command(verb: str, name: str) -> str:
    """The exact lifecycle command for cluster `name` (errors quote it so learners can paste it)."""
    return f"ckalab {verb}" if name == home.DEFAULT_CLUSTER else f"ckalab {verb} --name {name}"


def up_command(name: str) -> str:
    return command("up", name)


def _state_problem(data) -> str | None:
    if not isinstance(data, dict):
        return f"expected an object, found {type(data).__name__}"
    from . import BACKENDS  # the registry imports this module first

    if data.get("backend") not in (None, *BACKENDS):
        return f"unknown backend {data['backend']!r}"
    ports = data.get("ports")
    if ports is not None and not (isinstance(ports, dict) and all(
            isinstance(k, str) and type(v) is int and 0 < v < 65536 for k, v in ports.items())):
        return f"'ports' must map names to port numbers, found {json.dumps(ports)[:80]}"
    return None


def read_cluster_state(name: str) -> dict:
    """cluster.json of cluster `name` ({} when it has none); a damaged one is a clear error."""
    path = home.cluster_dir(name) / "cluster.json"
    recover = (f"Move it aside (mv {path} {path}.damaged), then run '{command('down', name)}' and "
               f"'{up_command(name)}': certificates, etcd data and addresses are kept.")
    return home.read_state(path, _state_problem, recover) or {}


class Cluster(abc.ABC):
    """A lab cluster. Subclasses: LocalCluster (embedded control plane), KindCluster."""

    backend = "?"
    # What this backend offers checks and scripts: "exec" (run commands in containers), "traffic"
    # (pods carry real packets), "netpol-enforcement" (a CNI enforces NetworkPolicy),
    # "node-files" (read_file reaches the control-plane node's files), "private-registry" (a
    # registry with logins the nodes pull from: publish_private_image). A check asks offers().
    features: frozenset[str] = frozenset()

    @classmethod
    def usable(cls) -> bool:
        """Whether this machine can run the backend (auto detection asks in AUTO_ORDER)."""
        return True

    def offers(self, feature: str) -> bool:
        return feature in self.features

    def offered(self) -> frozenset[str]:
        """Every feature this cluster offers now (a result bundle records them)."""
        return frozenset(self.features)

    # The kinds of nodes `ckalab up --nodes MODE` may ask this backend for (the local backend:
    # "kwok", or "real" kubelet nodes); empty for a backend with one kind of node only (kind's
    # nodes are real containers already). cmd_up asks check_nodes() instead of naming backends.
    node_modes: tuple[str, ...] = ()

    def check_nodes(self, mode: str) -> None:
        """Refuse, saying which backend has it, a `--nodes MODE` this cluster has no choice of."""
        if mode in self.node_modes:
            return
        from ..errors import CkalabError
        from . import BACKENDS, backend_class

        where = " or ".join(n for n in BACKENDS if mode in backend_class(n).node_modes)
        raise CkalabError((f"--nodes {mode} is for the {where} backend; " if where else "")
                          + f"cluster '{self.name}' uses {self.backend}, which has no --nodes {mode}.")

    def shell(self, node: str, command: list[str] | None = None) -> tuple[list[str], dict[str, str]]:
        """argv and environment of a root shell (or `command`) on `node`: `ckalab ssh NODE`."""
        from ..errors import CkalabError

        raise CkalabError(f"Node shells are not available on the {self.backend} backend (cluster '{self.name}').")

    def publish_private_image(self, image: str, username: str, password: str) -> str:
        """Serve `image` (host/path[:tag]) from a registry that only `username`/`password` may
        pull from, reachable by the nodes under that host name (the image-pull-secrets task)."""
        from ..errors import CkalabError

        raise CkalabError(f"A private registry is not available on the {self.backend} backend (cluster '{self.name}').")

    def __init__(self, name: str = home.DEFAULT_CLUSTER):
        self.name = name
        self.dir = home.cluster_dir(name)

    # lifecycle: up and down of one cluster never overlap (one holds the lock, the other waits)
    def _lifecycle(self, verb: str, progress: Progress):
        return home.locked(self.dir / "lifecycle.lock", f"'{command(verb, self.name)}'",
                           home.lock_timeout(900), progress)

    def up(self, progress: Progress = print) -> None:
        """Start the cluster (or what of it stopped) and wait until it serves."""
        with self._lifecycle("up", progress):
            self._up(progress)

    def down(self, progress: Progress = print) -> None:
        """Stop the cluster; its state is kept for the next `up`."""
        with self._lifecycle("down", progress):
            self._down(progress)

    @abc.abstractmethod
    def _up(self, progress: Progress) -> None:
        ...

    @abc.abstractmethod
    def _down(self, progress: Progress) -> None:
        ...

    @abc.abstractmethod
    def status(self) -> ClusterStatus:
        ...

    @property
    @abc.abstractmethod
    def kubeconfig(self) -> Path:
        """The lab's admin kubeconfig: graders and setup use it, never the learner's context."""
        ...

    # PKI and component inspection, as a learner does on a kubeadm control plane
    @property
    @abc.abstractmethod
    def pki_dir(self) -> str:
        """Where the learner finds the PKI (a host path, or a path inside the kind node)."""
        ...

    @abc.abstractmethod
    def read_file(self, path: str) -> bytes:
        """Read a control-plane file by the path the learner sees (pki_dir/..., manifests/...)."""
        ...

    @abc.abstractmethod
    def manifest(self, component: str) -> dict:
        """The static Pod manifest of a control-plane component (kube-apiserver, etcd, ...)."""
        ...

    def component_flags(self, component: str) -> dict[str, str]:
        """`--flag=value` pairs from the component's command line, as the manifest shows them."""
        container = self.manifest(component)["spec"]["containers"][0]
        flags: dict[str, str] = {}
        for arg in list(container.get("command", [])) + list(container.get("args", [])):
            if arg.startswith("--"):
                key, _, value = arg[2:].partition("=")
                flags[key] = value
        return flags

    # bookkeeping shared by backends
    def _state_file(self) -> Path:
        return self.dir / "cluster.json"

    def load_state(self) -> dict:
        return read_cluster_state(self.name)

    def save_state(self, state: dict) -> None:
        home.write_atomic(self._state_file(), json.dumps(state, indent=2))


def docker_works() -> bool:
    if not shutil.which("docker"):
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=15).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False
