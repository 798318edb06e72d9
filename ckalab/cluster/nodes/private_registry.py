"""A private registry for the real nodes: what the image-pull-secrets task is about.

A second Debian docker-registry (distribution 2.8) serves HTTPS on port 443 of the bridge's host
address, with htpasswd logins and a certificate from the cluster CA. A lab names the registry
host its image uses (private-registry.io, say): the nodes resolve that name to the bridge
address (a line in their own /etc/hosts) and their containerd trusts the cluster CA for it
(certs.d/<host>/hosts.toml). Port 443, because the kubelet hands containerd the credentials of
a pull secret for the image's host exactly; a mirror on another port would not get them.
So a pod without the right Secret really sits in ImagePullBackOff (401 from the registry), and
with it the image is really pulled. Nothing leaves the machine: the names exist only inside the
nodes.

    publish(nodes, "private-registry.io/apps/internal-app", "registry-user", "registry-password")
"""

from __future__ import annotations

import json
import shutil
import time
import warnings
from pathlib import Path

import yaml

from ... import home
from ...errors import CkalabError
from ...waiting import WaitTimeout, wait_for

PORT = 443
COMPONENT = "private-registry"
# What a published private image holds: the nginx stand-in (a web server that keeps running, so
# a pod that pulled it becomes Ready).
SOURCE = "library/nginx:latest"


# bcrypt's cost: 2**4 rounds, its minimum, instead of crypt's 2**12. The registry checks the hash
# on every request of a pull, and a pod whose Secret is wrong retries for as long as it lives:
# at 2**12 one such registry used 16 % of a core of this 2-core machine in the test suite. These
# are throwaway lab passwords on the cluster's own bridge; a slow hash protects nothing here.
BCRYPT_ROUNDS = 16
# Go's resolver (net/hosts.go cacheMaxAge) keeps /etc/hosts for this long before it looks again.
GO_HOSTS_CACHE_SECONDS = 5.0


def _bcrypt(password: str) -> str:
    """distribution's htpasswd accepts bcrypt only; Debian's libcrypt makes it ($2b$)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # crypt: still in the Python we pin
        import crypt
    hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=BCRYPT_ROUNDS))
    if not hashed or not hashed.startswith("$2"):
        raise CkalabError("This machine's crypt(3) cannot make bcrypt hashes, which the private "
                          "registry's htpasswd needs (Debian's libcrypt1 can).")
    return hashed


def _split(image: str) -> tuple[str, str]:
    """'host/path[:tag]' -> (host, 'path:tag'); the tag defaults to latest."""
    host, _, path = image.partition("/")
    if not path or not ("." in host or ":" in host or host == "localhost"):
        raise CkalabError(f"'{image}' names no registry host (like private-registry.io/apps/app).")
    if ":" in host:
        raise CkalabError(f"'{image}': the private registry serves on the standard port only (no ':port').")
    last = path.rsplit("/", 1)[-1]
    return host, path if ":" in last else f"{path}:latest"


class PrivateRegistry:
    def __init__(self, nodes) -> None:
        self.nodes = nodes
        self.dir = nodes.root / COMPONENT
        self.state_file = self.dir / "state.json"

    def _state(self) -> dict:
        try:
            state = json.loads(self.state_file.read_text())
            return state if isinstance(state, dict) else {}
        except (OSError, ValueError):
            return {}

    def publish(self, image: str, username: str, password: str, progress=lambda m: None) -> str:
        """Serve `image` (host/path[:tag]) to `username`/`password` only, and make the nodes
        reach and trust that host. Idempotent; another user's login stays valid."""
        host, path = _split(image)
        state = self._state()
        hosts, users = set(state.get("hosts", [])), dict(state.get("users", {}))
        changed = host not in hosts or users.get(username, {}).get("password") != password
        hosts.add(host)
        if users.get(username, {}).get("password") != password:
            users[username] = {"password": password, "hash": _bcrypt(password)}
        self.dir.mkdir(parents=True, exist_ok=True)
        if changed or not self.nodes.processes().get(COMPONENT):
            self._serve(sorted(hosts), users)
        added = [self._node_trusts(self.nodes.node(name), host) for name in self.nodes.names()]
        if any(added):
            # containerd (Go's resolver) rereads /etc/hosts at most every 5 s: a pull within 5 s of
            # the new line would look the name up in DNS and fail (seen as ErrImagePull "lookup
            # private-registry.io ... dial udp" when the lab's Secret was added right away).
            time.sleep(GO_HOSTS_CACHE_SECONDS)
        self._push(host, path, username, password)
        home.write_atomic(self.state_file, json.dumps({"hosts": sorted(hosts), "users": users}, indent=1),
                          private=True)
        progress(f"published {host}/{path} for user {username}")
        return f"{host}/{path}"

    def resume(self) -> None:
        """After `up`: serve again what labs published before (their pods pull at every start)."""
        state = self._state()
        if state.get("hosts") and state.get("users") and not self.nodes.processes().get(COMPONENT):
            self._serve(state["hosts"], state["users"])

    def _serve(self, hosts: list[str], users: dict) -> None:
        """(Re)start the registry: distribution reads its htpasswd file and certificate at start."""
        from ..local import pki as kpki

        gw = self.nodes.gateway
        pki = kpki.pki
        ca_dir = Path(self.nodes.cluster.pki_dir)
        ca = (pki.load_key(ca_dir / "ca.key"), pki.load_cert(ca_dir / "ca.crt"))
        key, cert = pki.sign(*ca, hosts[0], usages=(pki.SERVER_AUTH,), dns=hosts, ips=(gw,), days=365)
        pki.write_pair(self.dir, "tls", key, cert)
        home.write_atomic(self.dir / "htpasswd", "".join(f"{u}:{v['hash']}\n" for u, v in sorted(users.items())),
                          private=True)
        (self.dir / "data").mkdir(exist_ok=True)
        config = {"version": 0.1, "log": {"level": "warn"},
                  "storage": {"filesystem": {"rootdirectory": str(self.dir / "data")}},
                  "auth": {"htpasswd": {"realm": "ckalab private registry", "path": str(self.dir / "htpasswd")}},
                  "http": {"addr": f"{gw}:{PORT}",
                           "tls": {"certificate": str(self.dir / "tls.crt"), "key": str(self.dir / "tls.key")}}}
        home.write_atomic(self.dir / "config.yml", yaml.safe_dump(config, sort_keys=False))
        self.nodes._stop(COMPONENT)
        binary = shutil.which("docker-registry") or shutil.which("registry")
        if not binary:
            raise CkalabError("The private registry is Debian's docker-registry: apt-get install docker-registry.")
        self.nodes.spawn(COMPONENT, [binary, "serve", str(self.dir / "config.yml")], self.dir / "registry.log")
        from . import _listening
        wait_for(lambda: _listening(gw, PORT), 20, "the private registry")

    def _node_trusts(self, node, host: str) -> bool:
        """The node resolves `host` to the bridge address and trusts the cluster CA for it.
        True when its /etc/hosts got the line just now."""
        from . import _run

        line = f"{self.nodes.gateway} {host}"
        hosts = _run(["nsenter", f"--mount={node.mntns}", "--", "cat", "/etc/hosts"], check=False).stdout
        added = line not in hosts.splitlines()
        if added:
            _run(["nsenter", f"--mount={node.mntns}", "--", "sh", "-c", 'printf "%s\\n" "$1" >> /etc/hosts',
                  "sh", line])
        ca = Path(self.nodes.cluster.pki_dir) / "ca.crt"
        home.write_atomic(node.p(f"etc/containerd/certs.d/{host}/hosts.toml"),
                          f'server = "https://{host}"\n\n[host."https://{host}"]\n'
                          f'  capabilities = ["pull", "resolve", "push"]\n  ca = "{ca}"\n')
        return added

    def _push(self, host: str, path: str, username: str, password: str) -> None:
        """The stand-in image into the registry under `path`, pushed as `username` (ctr in the
        controlplane's mount namespace, where `host` resolves)."""
        from . import _run, ensure_binaries, images

        bins = ensure_binaries(lambda m: None)
        cp = self.nodes.control_plane
        archive = self.nodes.root / "registry" / "archives" / (SOURCE.replace("/", "_").replace(":", "_") + ".tar")
        if not archive.exists():
            raise CkalabError(f"No image archive {archive} to publish: run 'ckalab up --nodes real' first.")
        target = f"{host}/{path}"
        ctr = ["nsenter", f"--mount={cp.mntns}", "--", str(bins["ctr"]), "--address", str(cp.sock),
               "--namespace", "ckalab-publish"]
        steps = (["images", "import", "--snapshotter", "overlayfs", str(archive)],
                 ["images", "tag", "--force", images.upstream_name(SOURCE), target],
                 ["images", "push", "--hosts-dir", str(cp.p("etc/containerd/certs.d")),
                  "--user", f"{username}:{password}", target])
        for args in steps:
            last = {}

            def done(args=args, last=last):
                last["proc"] = _run([*ctr, *args], check=False, timeout=300)
                return last["proc"].returncode == 0
            try:  # a registry that has just restarted may refuse the first push
                wait_for(done, 20, f"ctr {' '.join(args[:2])}")
            except WaitTimeout:
                proc = last["proc"]
                raise CkalabError(f"Publishing {target} to the private registry failed at `ctr {' '.join(args[:2])}`: "
                                  f"{(proc.stderr or proc.stdout).strip()[-500:]}") from None
        _run([*ctr, "images", "rm", target], check=False)


def for_nodes(nodes) -> PrivateRegistry:
    return PrivateRegistry(nodes)
