"""The control plane as a kubeadm node holds it, read the way an administrator on that node does:
static pod manifests (their flags and hostPath mounts), files under the node's paths, what the
container runtime says about a component's container, and whether the API server answers.

Shared by the graders of the labs that break or reconfigure the control plane (apiserver-repair,
admission-plugins, audit-logging, encryption-at-rest, cert-renewal): they differ in what they
check, not in how they read the node. Every failure is a learner-facing message (grading.fail
and expect) that names the path on the node and how to look there.
"""

from __future__ import annotations

import base64
import json
import posixpath
import ssl
import subprocess
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

import yaml

from ckalab import learner_files
from ckalab.grading import expect, fail

NODE = "controlplane"
NODE_ETC = "/etc/kubernetes"
PKI = f"{NODE_ETC}/pki"
API_SERVER = f"{NODE_ETC}/manifests/kube-apiserver.yaml"
ETCD = f"{NODE_ETC}/manifests/etcd.yaml"
ON_NODE = "on the node: ckalab ssh controlplane"
LOOK_CONTAINER = "crictl ps -a --name kube-apiserver, then crictl logs CONTAINER-ID"
TIMEOUT = 3  # seconds for each request to the API server: a check must never hang on it
READ_TIMEOUT = 15  # seconds to read one file through the node's shell
TAIL_BYTES = 4_000_000  # how much of a log's end a check reads


# --- files on the node --------------------------------------------------------------------------

def _host_etc(cluster) -> str:
    return posixpath.dirname(str(cluster.pki_dir).rstrip("/"))


def read_file(cluster, path: str, tail: bool = False) -> bytes | None:
    """A regular file of the controlplane node by its path there (None: no such file), bounded like
    every learner file: its first MAX_BYTES + 1 bytes, or with `tail` a log's last TAIL_BYTES."""
    path = posixpath.normpath(path)
    host_etc = _host_etc(cluster)
    if not Path(host_etc).is_dir():  # the node's files are elsewhere (a kind node): the backend reads
        try:
            data = cluster.read_file(path)
        except Exception:  # noqa: BLE001 - an unreadable file is reported as missing
            return None
        return data[-TAIL_BYTES:] if tail else data[:learner_files.MAX_BYTES + 1]
    if not tail and (path == NODE_ETC or path.startswith(NODE_ETC + "/")):
        # /etc/kubernetes of the controlplane node is the cluster's etc/kubernetes on this machine
        try:
            return learner_files.read_bytes(host_etc + path[len(NODE_ETC):], name=path)
        except learner_files.LearnerFileError as exc:
            if "not found" in str(exc):
                return None
            fail(str(exc).replace(host_etc, NODE_ETC) + f" ({ON_NODE}).")
    # elsewhere on the node (its own overlays): read it there, bounded in size and time
    read = f'tail -c {TAIL_BYTES} "$1"' if tail else f'head -c {learner_files.MAX_BYTES + 1} "$1"'
    try:
        argv, env = cluster.shell(NODE, ["sh", "-c", 'test -f "$1" || exit 3; ' + read, "sh", path])
    except Exception:  # noqa: BLE001 - no node shell: the file cannot be found there
        return None
    try:
        proc = subprocess.run(argv, env=env, capture_output=True, timeout=READ_TIMEOUT)
    except subprocess.TimeoutExpired:
        fail(f"Reading {path} on the controlplane node took longer than {READ_TIMEOUT} s. "
             f"Look: ls -l {path} ({ON_NODE}).")
    return proc.stdout if proc.returncode == 0 else None


def parse_yaml(data: bytes, path: str, consequence: str):
    """A node file's YAML; a learner-facing failure when it is not text or not YAML (`consequence`
    says what that breaks, e.g. "The kubelet cannot read it either, so the static pod does not run.")."""
    try:
        return learner_files.parse_yaml(data.decode("utf-8"), path)
    except UnicodeDecodeError:
        fail(f"{path} is not a text file. Look: cat {path} ({ON_NODE}).")
    except learner_files.LearnerFileError as exc:
        fail(str(exc))
    except yaml.YAMLError as exc:
        fail(f"{learner_files.yaml_error_text(exc, path)} {consequence} Look: cat -A {path} ({ON_NODE}); "
             "indentation uses spaces only.")


# --- static pod manifests -------------------------------------------------------------------------

class StaticPod:
    """A static pod manifest as the kubelet reads it: its first container's flags and the hostPath
    volumes that show node paths to that container."""

    def __init__(self, cluster, path: str = API_SERVER):
        self.path = path
        data = read_file(cluster, path)
        expect(data is not None, f"{path} is missing on the controlplane node, so the kubelet runs no "
               f"{posixpath.basename(path).removesuffix('.yaml')}. Look: ls {posixpath.dirname(path)} ({ON_NODE}).")
        pod = parse_yaml(data, path, "The kubelet cannot read it either, so the static pod does not run.")
        containers = (pod.get("spec") or {}).get("containers") if isinstance(pod, dict) else None
        expect(isinstance(containers, list) and containers and isinstance(containers[0], dict),
               f"{path} is not a Pod with a container (spec.containers). Look: cat {path} ({ON_NODE}).")
        self.spec, self.container = pod["spec"], containers[0]
        self.args = [str(a) for a in list(self.container.get("command") or []) + list(self.container.get("args") or [])]
        self.flags: dict[str, str] = {}
        for i, arg in enumerate(self.args):  # the last of a repeated flag wins, as in the components
            if arg.startswith("--"):
                key, eq, value = arg[2:].partition("=")
                if not eq and i + 1 < len(self.args) and not self.args[i + 1].startswith("-"):
                    value = self.args[i + 1]  # "--flag value" as two items: the component reads it so too
                self.flags[key] = value.strip()

    def list_flag(self, flag: str) -> list[str] | None:
        """Every name a list flag gives over all its occurrences (the API server appends repeated
        list flags); None when the flag is absent. Names are not stripped: the API server reads
        " PodNodeSelector" (after a space) as another name."""
        found: list[str] | None = None
        for i, arg in enumerate(self.args):
            key, eq, value = arg.partition("=")
            if key != f"--{flag}":
                continue
            if not eq and i + 1 < len(self.args):
                value = self.args[i + 1]
            found = (found or []) + [n for n in value.split(",") if n]
        return found

    def mount_of(self, container_path: str) -> tuple[dict, str] | None:
        """The volumeMount that shows `container_path` to the container (the deepest one) and the
        node path it leads to; None when no hostPath volume covers it: the container cannot see it."""
        path = posixpath.normpath(container_path)
        volumes = {v.get("name"): (v.get("hostPath") or {}).get("path") for v in self.spec.get("volumes") or []
                   if isinstance(v, dict)}
        best = None
        for m in self.container.get("volumeMounts") or []:
            if not isinstance(m, dict):
                continue
            mount, host = posixpath.normpath(str(m.get("mountPath", "/-"))), volumes.get(m.get("name"))
            if host and (path == mount or path.startswith(mount.rstrip("/") + "/")):
                if best is None or len(mount) > len(best[0]):
                    best = (mount, host, m)
        if best is None:
            return None
        return best[2], posixpath.normpath(best[1] + path[len(best[0]):])

    def node_path(self, container_path: str) -> str | None:
        """Where a path of the container is on the node (None: no hostPath volume shows it)."""
        found = self.mount_of(container_path)
        return found[1] if found else None

    def mounts(self) -> str:
        """The container's mount paths, for a message."""
        return ", ".join(str(m.get("mountPath")) for m in self.container.get("volumeMounts") or []
                         if isinstance(m, dict)) or "none"


# --- the container runtime and the API server -------------------------------------------------------

def containers(cluster, name: str = "kube-apiserver", running_only: bool = False) -> list[dict] | None:
    """The node's containers of a component, as `crictl ps [-a] --name NAME` lists them (None: no
    node shell or no answer)."""
    try:
        argv, env = cluster.shell(NODE, ["crictl", "ps", *([] if running_only else ["-a"]), "--name", name,
                                         "-o", "json"])
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=10)
        return json.loads(proc.stdout).get("containers") or []
    except Exception:  # noqa: BLE001 - no node shell or no answer: unknown
        return None


def container_state(cluster, name: str = "kube-apiserver") -> str:
    """A sentence on what the node's container runtime says about the component's container
    (with a leading space), or '' when the runtime cannot be asked."""
    found = containers(cluster, name)
    if found is None:
        return ""
    if not found:
        return f" The node's container runtime has no {name} container at all."
    c = max(found, key=lambda x: int(x.get("createdAt", 0)))
    state = str(c.get("state", "?")).removeprefix("CONTAINER_").lower()
    starts = int((c.get("metadata") or {}).get("attempt", 0)) + 1
    return (f" On the node, the kubelet has started its container {starts} time{'s' if starts > 1 else ''} "
            f"since the manifest last changed; the newest is {state}.")


def why(exc: BaseException) -> str:
    """Why a connection got no HTTP answer, in words (not the socket library's)."""
    text = str(exc)
    if isinstance(exc, ConnectionRefusedError) or "refused" in text:
        return "connection refused: nothing listens there"
    if isinstance(exc, TimeoutError) or "timed out" in text or "timeout" in text.lower():
        return f"no answer within {TIMEOUT} s"
    if isinstance(exc, (OSError, ssl.SSLError)):
        return "the connection was closed before TLS was set up: nothing serves behind that address"
    return "the connection failed"


def admin_kubeconfig(cluster) -> dict:
    """server, CA and client certificate of the lab cluster's admin kubeconfig."""
    data = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    ctx_name = data.get("current-context")
    ctx = next((c["context"] for c in data.get("contexts") or [] if c.get("name") == ctx_name), None) or {}
    cl = next((c["cluster"] for c in data.get("clusters") or [] if c.get("name") == ctx.get("cluster")),
              (data.get("clusters") or [{}])[0].get("cluster", {}))
    user = next((u["user"] for u in data.get("users") or [] if u.get("name") == ctx.get("user")),
                (data.get("users") or [{}])[0].get("user", {}))

    def blob(d: dict, key: str) -> bytes:
        if d.get(f"{key}-data"):
            return base64.b64decode(d[f"{key}-data"])
        return Path(d[key]).read_bytes()

    return {"server": cl["server"].rstrip("/"), "ca": blob(cl, "certificate-authority"),
            "cert": blob(user, "client-certificate"), "key": blob(user, "client-key")}


def get(cluster, path: str, client_cert: bool = False) -> tuple[int | None, str]:
    """(HTTP status, body) of a GET verified against the kubeconfig's CA, as kubectl makes it;
    (None, why) when nothing answers. A certificate that does not verify raises
    ssl.SSLCertVerificationError: the server answers, but no client would trust it."""
    kc = admin_kubeconfig(cluster)
    ctx = ssl.create_default_context(cadata=kc["ca"].decode())
    with tempfile.TemporaryDirectory(prefix="ckalab-controlplane-") as d:
        if client_cert:
            cert, key = Path(d, "c.crt"), Path(d, "c.key")
            cert.write_bytes(kc["cert"])
            key.write_bytes(kc["key"])
            ctx.load_cert_chain(cert, key)
        try:
            with urllib.request.urlopen(kc["server"] + path, context=ctx, timeout=TIMEOUT) as r:
                return r.status, r.read(4096).decode(errors="replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(4096).decode(errors="replace")
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, ssl.SSLCertVerificationError):
                raise exc.reason from None
            return None, why(exc.reason)
        except ssl.SSLCertVerificationError:
            raise
        except (OSError, ValueError) as exc:  # reset, EOF from the relay, timeout
            return None, why(exc)


def expect_api_server_serves(cluster, namespace: str) -> None:
    """The API server answers a read that goes through to etcd (any HTTP answer, even a 404: it
    serves, not only listens); otherwise a failure saying what the runtime knows."""
    from ckalab.kube import Kube

    try:
        Kube(cluster.kubeconfig, timeout=TIMEOUT).request("GET", f"/api/v1/namespaces/{namespace}")
    except Exception as exc:  # noqa: BLE001 - down, restarting, refusing: all say the same to the learner
        if getattr(exc, "status", None):
            return
        fail(f"The API server does not answer ({why(exc)}).{container_state(cluster)} While it is down, only the "
             f"node's files are checked. Look: {LOOK_CONTAINER} ({ON_NODE}).")
