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

from ckalab.controlplane import (API_SERVER as MANIFEST, LOOK_CONTAINER, NODE, ON_NODE, PKI, TIMEOUT, StaticPod,
                                 expect_api_server_serves, parse_yaml, read_file)
from ckalab.grading import check, expect, fail, fixture, skip

# Key lengths (bytes) each provider the task may ask for accepts.
KEY_BYTES = {"aescbc": (16, 24, 32), "secretbox": (32,)}
# What setup stored (setup/secrets.yaml): name suffix -> password.
PASSWORDS = {"": "correct-horse-{secret}", "-previous": "battery-staple-{secret}"}


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
    data = read_file(node, path)
    expect(data is not None, f"No file {path} on the controlplane node. Look: ls -l {posixpath.dirname(path)} "
           f"({ON_NODE}).")
    config = parse_yaml(data, path, "The API server cannot start with a configuration it cannot read.")
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
    pod, want = StaticPod(node), lab.params["config"]
    path = pod.flags.get("encryption-provider-config")
    expect(path, f"{MANIFEST} has no --encryption-provider-config: the API server stores Secrets as they are. "
           f"Look: grep -- --encryption {MANIFEST} ({ON_NODE}).")
    host, mounts = pod.node_path(path), pod.mounts()
    expect(host, f"--encryption-provider-config={path} is inside the container only: no hostPath volume is mounted "
           f"there (mounts: {mounts}), so the API server cannot read it. Look: the volumeMounts and volumes of "
           f"{MANIFEST}.")
    expect(host == want, f"--encryption-provider-config={path} is {host} on the node; the task asks for {want}. "
           f"Look: grep -- --encryption-provider-config {MANIFEST}, and the hostPath of the volume mounted there.")


@fixture
def api(node):
    from ckalab.kube import Kube

    return Kube(node.kubeconfig, timeout=TIMEOUT)


@check(1, "the API server is running and answers", hint=LOOK_CONTAINER)
def test_api_server_up(node, lab):
    expect_api_server_serves(node, lab.params["namespace"])


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
