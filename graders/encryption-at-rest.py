"""Grader for encryption-at-rest: the learner's EncryptionConfiguration, wired into the API server's
static pod, judged by what etcd really holds.

The file checks read the node (the manifest, the configuration), so they report while the API
server is down. The behaviour checks read each Secret's raw value from etcd (etcdctl on the
controlplane node with the API server's etcd client certificate, bounded in time): a Secret
stored encrypted starts with k8s:enc:<provider>:v1:<key name>:, a plain one with the protobuf
magic k8s\\x00. They also read the Secrets back through the API and create one of their own.
"""

from __future__ import annotations

import base64
import binascii
import json
import posixpath
import secrets
import subprocess

import yaml

from ckalab import learner_files
from ckalab.grading import check, expect, fail, fixture, skip

NODE = "controlplane"
MANIFEST = "/etc/kubernetes/manifests/kube-apiserver.yaml"
ON_NODE = "on the node: ckalab ssh controlplane"
LOOK_CONTAINER = "crictl ps -a --name kube-apiserver, then crictl logs CONTAINER-ID"
PKI = "/etc/kubernetes/pki"
TIMEOUT = 3  # seconds for each request to the API server: a check must never hang on it
# Key lengths (bytes) each provider the task may ask for accepts.
KEY_BYTES = {"aescbc": (16, 24, 32), "secretbox": (32,)}
# What setup stored (setup/secrets.yaml): name suffix -> password.
PASSWORDS = {"": "correct-horse-{secret}", "-previous": "battery-staple-{secret}"}


def _node_file(cluster, path: str) -> bytes | None:
    """A file of the controlplane node (None: no such regular file), at most 1 MB."""
    argv, env = cluster.shell(NODE, ["sh", "-c", 'test -f "$1" || exit 3; head -c 1000001 "$1"', "sh", path])
    try:
        proc = subprocess.run(argv, env=env, capture_output=True, timeout=15)
    except subprocess.TimeoutExpired:
        fail(f"Reading {path} on the controlplane node took longer than 15 s. Look: ls -l {path} ({ON_NODE}).")
    return proc.stdout if proc.returncode == 0 else None


def _yaml(data: bytes, path: str, what: str):
    try:
        return learner_files.parse_yaml(data.decode("utf-8"), path)
    except UnicodeDecodeError:
        fail(f"{path} is not a text file. Look: cat {path} ({ON_NODE}).")
    except learner_files.LearnerFileError as exc:
        fail(str(exc))
    except yaml.YAMLError as exc:
        fail(f"{learner_files.yaml_error_text(exc, path)} {what} Look: cat -A {path} ({ON_NODE}); "
             "indentation uses spaces only.")


def _flag(pod: dict, name: str) -> str | None:
    c = pod["spec"]["containers"][0]
    args = [str(a) for a in list(c.get("command") or []) + list(c.get("args") or [])]
    value = None
    for i, arg in enumerate(args):  # the last of a repeated flag wins, as in the API server
        key, eq, rest = arg[2:].partition("=") if arg.startswith("--") else ("", "", "")
        if key == name:
            value = rest if eq else (args[i + 1] if i + 1 < len(args) and not args[i + 1].startswith("-") else "")
    return value


def _host_path(pod: dict, container_path: str) -> str | None:
    """Where the container's path is on the node, through the deepest hostPath mount covering it."""
    path = posixpath.normpath(container_path)
    volumes = {v.get("name"): (v.get("hostPath") or {}).get("path") for v in pod["spec"].get("volumes") or []
               if isinstance(v, dict)}
    best = None
    for m in pod["spec"]["containers"][0].get("volumeMounts") or []:
        if not isinstance(m, dict):
            continue
        mount, host = posixpath.normpath(str(m.get("mountPath", "/-"))), volumes.get(m.get("name"))
        if host and (path == mount or path.startswith(mount.rstrip("/") + "/")) and (
                best is None or len(mount) > len(best[0])):
            best = (mount, host)
    return posixpath.normpath(best[1] + path[len(best[0]):]) if best else None


def _manifest(cluster) -> dict:
    data = _node_file(cluster, MANIFEST)
    expect(data is not None, f"{MANIFEST} is missing on the controlplane node, so the kubelet runs no API server. "
           f"Look: ls /etc/kubernetes/manifests ({ON_NODE}).")
    pod = _yaml(data, MANIFEST, "The kubelet cannot read it either, so the API server does not run.")
    containers = (pod.get("spec") or {}).get("containers") if isinstance(pod, dict) else None
    expect(isinstance(containers, list) and containers and isinstance(containers[0], dict),
           f"{MANIFEST} is not a Pod with a container (spec.containers). Look: cat {MANIFEST} ({ON_NODE}).")
    return pod


class Etcd:
    """etcdctl on the controlplane node, against the address etcd's manifest names."""

    def __init__(self, cluster):
        self.cluster = cluster
        urls = cluster.component_flags("etcd").get("listen-client-urls") or ""
        self.url = next((u for u in urls.split(",") if u.startswith("https://")), urls.split(",")[0])

    def value(self, key: str) -> bytes | None:
        """The raw bytes stored under `key` (None: no such key)."""
        argv, env = self.cluster.shell(NODE, [
            "etcdctl", f"--endpoints={self.url}", f"--cacert={PKI}/etcd/ca.crt",
            f"--cert={PKI}/apiserver-etcd-client.crt", f"--key={PKI}/apiserver-etcd-client.key",
            "--dial-timeout=2s", "--command-timeout=5s", "get", key, "-w", "json"])
        try:
            proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=20)
        except subprocess.TimeoutExpired:
            fail(f"etcd at {self.url} did not answer within 20 s. Look: crictl ps -a --name etcd ({ON_NODE}).")
        expect(proc.returncode == 0, f"The grader cannot read etcd at {self.url}: "
               f"{(proc.stderr.strip().splitlines() or ['no answer'])[-1][:200]}. Look: crictl ps -a --name etcd "
               f"({ON_NODE}).")
        kvs = json.loads(proc.stdout).get("kvs") or []
        return base64.b64decode(kvs[0].get("value", "")) if kvs else None


@fixture(scope="module")
def node(cluster):
    """The cluster, when its API server runs as a static pod on a node with a shell."""
    if not (cluster.offers("static-pods") and cluster.offers("node-shell")):
        skip("needs the control plane as static pods on a real node ('ckalab up --nodes real', as root)")
    return cluster


def _stored(raw: bytes, provider: str) -> str:
    """How a value is stored, in words, for a message."""
    if raw.startswith(b"k8s:enc:"):
        head = raw[:80].split(b":")
        name = head[2].decode(errors="replace") if len(head) > 2 else "?"
        key = head[4].decode(errors="replace") if len(head) > 4 else "?"
        return f"encrypted with {name} (key '{key}')" + ("" if name == provider else f", not {provider}")
    return "in plain form (it starts with 'k8s', the protobuf marker, not 'k8s:enc:')"


def _look(lab, name: str) -> str:
    return (f"Look: etcdctl ... get /registry/secrets/{lab.params['namespace']}/{name} | hexdump -C | head "
            f"({ON_NODE}).")


# --- the files -----------------------------------------------------------------------------------

@check(2, "the EncryptionConfiguration on the node encrypts Secrets with the provider asked for",
       hint="cat the configuration file on the node")
def test_config(node, lab):
    path, provider = lab.params["config"], lab.params["provider"]
    data = _node_file(node, path)
    expect(data is not None, f"No file {path} on the controlplane node. Look: ls -l {posixpath.dirname(path)} "
           f"({ON_NODE}).")
    config = _yaml(data, path, "The API server cannot start with a configuration it cannot read.")
    expect(isinstance(config, dict), f"{path} is not a YAML mapping. Look: cat {path} ({ON_NODE}).")
    expect(config.get("apiVersion") == "apiserver.config.k8s.io/v1" and config.get("kind") == "EncryptionConfiguration",
           f"{path} has apiVersion '{config.get('apiVersion')}' and kind '{config.get('kind')}'; the API server reads "
           "apiVersion apiserver.config.k8s.io/v1, kind EncryptionConfiguration.")
    entry = next((e for e in config.get("resources") or [] if isinstance(e, dict)
                  and any(r in ("secrets", "*.*", "*.") for r in e.get("resources") or [])), None)
    expect(entry, f"No entry of {path} names secrets under resources: Secrets would be stored as before. "
           f"Look: the resources lists in {path}.")
    providers = [p for p in entry.get("providers") or [] if isinstance(p, dict)]
    expect(providers, f"The entry for secrets in {path} has no providers. Look: its providers list.")
    first = next(iter(providers[0]), "?")
    expect(first == provider, f"The first provider for secrets in {path} is {first}: the first one encrypts every "
           f"write, and the task asks for {provider}. Look: the order of the providers list.")
    keys = (providers[0][first] or {}).get("keys") if isinstance(providers[0][first], dict) else None
    expect(isinstance(keys, list) and keys and isinstance(keys[0], dict),
           f"The {provider} provider in {path} has no keys. Look: its keys list (name and secret).")
    name, secret = keys[0].get("name"), str(keys[0].get("secret") or "")
    try:
        size = len(base64.b64decode(secret, validate=True))
    except (binascii.Error, ValueError):
        fail(f"The secret of key '{name}' in {path} is not base64. Look: echo SECRET | base64 -d | wc -c.")
    expect(size in KEY_BYTES[provider], f"The secret of key '{name}' in {path} decodes to {size} bytes; {provider} "
           f"wants {' or '.join(map(str, KEY_BYTES[provider]))}. Look: echo SECRET | base64 -d | wc -c.")


@check(2, "the API server reads that configuration", hint=f"grep -- --encryption-provider-config {MANIFEST}")
def test_flag(node, lab):
    pod, want = _manifest(node), lab.params["config"]
    path = _flag(pod, "encryption-provider-config")
    expect(path, f"{MANIFEST} has no --encryption-provider-config: the API server stores Secrets as they are. "
           f"Look: grep -- --encryption {MANIFEST} ({ON_NODE}).")
    host = _host_path(pod, path)
    mounts = ", ".join(str(m.get("mountPath")) for m in pod["spec"]["containers"][0].get("volumeMounts") or []
                       if isinstance(m, dict)) or "none"
    expect(host, f"--encryption-provider-config={path} is inside the container only: no hostPath volume is mounted "
           f"there (mounts: {mounts}), so the API server cannot read it. Look: the volumeMounts and volumes of "
           f"{MANIFEST}.")
    expect(host == want, f"--encryption-provider-config={path} is {host} on the node; the task asks for {want}. "
           f"Look: grep -- --encryption-provider-config {MANIFEST}, and the hostPath of the volume mounted there.")


def _why(exc: Exception) -> str:
    text = str(exc)
    if "refused" in text:
        return "connection refused: nothing listens there"
    if "timed out" in text or "timeout" in text.lower():
        return f"no answer within {TIMEOUT} s"
    return "the connection failed"


def _container_state(cluster) -> str:
    try:
        argv, env = cluster.shell(NODE, ["crictl", "ps", "-a", "--name", "kube-apiserver", "-o", "json"])
        found = json.loads(subprocess.run(argv, env=env, capture_output=True, text=True, timeout=10).stdout
                           ).get("containers") or []
    except Exception:  # noqa: BLE001 - say nothing about the container then
        return ""
    if not found:
        return " The node's container runtime has no kube-apiserver container."
    c = max(found, key=lambda x: int(x.get("createdAt", 0)))
    return f" On the node its newest container is {str(c.get('state', '?')).removeprefix('CONTAINER_').lower()}."


@fixture
def api(node):
    from ckalab.kube import Kube

    return Kube(node.kubeconfig, timeout=TIMEOUT)


@check(1, "the API server is running and answers", hint=LOOK_CONTAINER)
def test_api_server_up(node, api, lab):
    try:  # a namespace read goes through to etcd: the API server serves, not only listens
        api.request("GET", f"/api/v1/namespaces/{lab.params['namespace']}")
    except Exception as exc:  # noqa: BLE001 - down, restarting, refusing: all say the same to the learner
        if getattr(exc, "status", None):
            return  # an HTTP answer (even a 404) is an API server that serves
        fail(f"The API server does not answer ({_why(exc)}).{_container_state(node)} While it is down, only the "
             f"node's files are checked. Look: {LOOK_CONTAINER} ({ON_NODE}).")


@fixture
def etcd(node):
    return Etcd(node)


# --- behaviour: etcd's bytes and the API's answers ---------------------------------------------------

def _setup_secrets(lab) -> dict[str, str]:
    s = lab.params["secret"]
    return {f"{s}{suffix}": password.format(secret=s) for suffix, password in PASSWORDS.items()}


@check(4, "the Secrets that existed before are stored encrypted in etcd",
       hint="Secrets written before the change stay as they were until written again")
def test_existing_encrypted(etcd, lab):
    ns, provider = lab.params["namespace"], lab.params["provider"]
    for name in _setup_secrets(lab):
        raw = etcd.value(f"/registry/secrets/{ns}/{name}")
        expect(raw is not None, f"Secret '{name}' is gone from namespace '{ns}' (no key /registry/secrets/{ns}/{name} "
               "in etcd); the task asks to keep it. 'ckalab reset encryption-at-rest' creates it again.")
        expect(raw.startswith(f"k8s:enc:{provider}:v1:".encode()),
               f"Secret '{name}' in namespace '{ns}' is stored {_stored(raw, provider)} in etcd. {_look(lab, name)}")


@check(2, "the Secrets still read back unchanged through the API", after="test_api_server_up",
       hint="kubectl get secret -n NAMESPACE NAME -o jsonpath='{.data.password}' | base64 -d")
def test_reads_back(api, lab):
    ns = lab.params["namespace"]
    for name, password in _setup_secrets(lab).items():
        try:
            obj = api.request("GET", f"/api/v1/namespaces/{ns}/secrets/{name}")
        except Exception as exc:  # noqa: BLE001 - the API server's own words say why it cannot
            body = getattr(exc, "body", None) or ""
            try:
                why = json.loads(body).get("message", "")
            except (TypeError, ValueError):
                why = str(exc)[:200]
            fail(f"Reading Secret '{name}' in namespace '{ns}' through the API fails: {why[:300]}. Look: kubectl get "
                 f"secret {name} -n {ns}, and the providers of the configuration the API server reads.")
        got = base64.b64decode((obj.get("data") or {}).get("password", "")).decode(errors="replace")
        expect(got == password, f"Secret '{name}' in namespace '{ns}' reads back with another password than it was "
               f"created with. Look: kubectl get secret {name} -n {ns} -o jsonpath='{{.data.password}}' | base64 -d.")


@check(2, "a Secret created now is stored encrypted", after="test_api_server_up",
       hint="the first provider encrypts every write")
def test_new_secret_encrypted(api, etcd, lab):
    ns, provider = lab.params["namespace"], lab.params["provider"]
    name, value = f"ckalab-probe-{secrets.token_hex(4)}", f"probe-{secrets.token_hex(8)}"
    path = f"/api/v1/namespaces/{ns}/secrets"
    api.request("POST", path, body={"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
                                    "stringData": {"probe": value}})
    try:
        raw = etcd.value(f"/registry/secrets/{ns}/{name}") or b""
    finally:
        try:
            api.request("DELETE", f"{path}/{name}")
        except Exception:  # noqa: BLE001 - gone already
            pass
    expect(value.encode() not in raw and raw.startswith(f"k8s:enc:{provider}:v1:".encode()),
           f"The grader created Secret '{name}' in namespace '{ns}', and etcd stores it {_stored(raw, provider)}. "
           f"Look: the first provider for secrets in the configuration the API server reads.")
