"""encryption-at-rest on real nodes: the learner's EncryptionConfiguration wired into the API
server, graded by the bytes etcd holds. Skipped unless CKALAB_REAL_NODES=1 (root).

    CKALAB_REAL_NODES=1 CKALAB_TEST_HOME=/tmp/ckt-x CKALAB_TEST_KEEP=1 \\
        .venv/bin/pytest tests/labs/test_encryption_at_rest.py -x -q

Every case starts from `reset`, whose teardown writes the values an earlier case encrypted back
in plain form (the key is at hand only while that case's configuration is), so no Secret of the
cluster is ever left unreadable; the module ends with the control plane restored and checks so.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import time

import pytest
import yaml
from conftest import LabHarness, check_of, put_api_server_manifest, switch_nodes, wait_api_server_refused

from ckalab import labs
from ckalab.kube import Kube
from ckalab.waiting import WaitTimeout, wait_for

LAB = "encryption-at-rest"
PROVIDERS = ("aescbc", "secretbox")
MANIFEST = "kube-apiserver.yaml"
KEY = base64.b64encode(bytes(range(32))).decode()  # a fixed test key: 32 bytes
OTHER_KEY = base64.b64encode(bytes(range(100, 132))).decode()
PKI = "/etc/kubernetes/pki"


def node_sh(cluster, argv: list[str]) -> subprocess.CompletedProcess:
    args, env = cluster.shell("controlplane", argv)
    return subprocess.run(args, env=env, capture_output=True, timeout=60)


def encrypted_in_etcd(cluster) -> list[str]:
    url = cluster.component_flags("etcd")["listen-client-urls"].split(",")[0]
    proc = node_sh(cluster, ["etcdctl", f"--endpoints={url}", f"--cacert={PKI}/etcd/ca.crt",
                             f"--cert={PKI}/apiserver-etcd-client.crt", f"--key={PKI}/apiserver-etcd-client.key",
                             "get", "--prefix", "/registry/", "-w", "json"])
    assert proc.returncode == 0, proc.stderr
    return [base64.b64decode(kv["key"]).decode() for kv in json.loads(proc.stdout).get("kvs") or []
            if base64.b64decode(kv.get("value", "")).startswith(b"k8s:enc:")]


@pytest.fixture(scope="module")
def contained(real_nodes):
    yield real_nodes
    labs.contain(labs.load(LAB), real_nodes)
    assert encrypted_in_etcd(real_nodes) == []  # no value is left that ckalab's API server cannot read


@pytest.fixture
def lab(contained):
    def make(**params) -> LabHarness:
        h = LabHarness(contained, LAB)
        h.lab = h.lab.with_params(**params)
        if h.workdir.exists():
            shutil.rmtree(h.workdir)
        for attempt in range(3):
            # reset deletes in the foreground, which waits on the controller manager's garbage
            # collector; right after API server restarts under load it was seen to need > 60 s
            try:
                h.reset()
                break
            except WaitTimeout:
                if attempt == 2:
                    raise
        return h
    return make


# --- acting on the node (its /etc/kubernetes is the cluster's etc/kubernetes) --------------------

def running_id(h) -> str:
    return node_sh(h.cluster, ["sh", "-c", "crictl ps --name kube-apiserver --state running -q | head -n 1"]
                   ).stdout.decode().strip()


def api_answers(h) -> bool:
    try:
        Kube(h.cluster.kubeconfig, timeout=2).request("GET", "/api/v1/namespaces/default")
        return True
    except Exception:  # noqa: BLE001
        return False


def config_text(provider="aescbc", key=KEY, first=None, resources=("secrets",), identity=True, extra=()) -> str:
    providers = [first] if first else []
    providers.append({provider: {"keys": [{"name": "key1", "secret": key}]}})
    providers += list(extra)
    if identity:
        providers.append({"identity": {}})
    return yaml.safe_dump({"apiVersion": "apiserver.config.k8s.io/v1", "kind": "EncryptionConfiguration",
                           "resources": [{"resources": list(resources), "providers": providers}]})


def answer(h, config: str | None = None, config_path: str | None = None, flag: str | None = "default",
           mounts: list | None = None, rewrite: str | None = "all", expect_down: bool = False,
           extra_args: list | None = None) -> None:
    """Write the configuration and ckalab's manifest with the flag and mounts (defaults: the
    reference solution's), wait for the kubelet to run it, then rewrite the namespace's Secrets."""
    p = h.params
    path = config_path or p["config"]
    target = h.cluster.etc / path.removeprefix("/etc/kubernetes/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(config if config is not None else config_text(p["provider"]))
    pod = yaml.safe_load((h.cluster.dir / "manifests.orig" / MANIFEST).read_text())
    c = pod["spec"]["containers"][0]
    if flag:
        c["command"].append(f"--encryption-provider-config={p['config'] if flag == 'default' else flag}")
    c["command"] += extra_args or []
    d = p["config"].rsplit("/", 1)[0]
    for name, host, inside, kind in (mounts if mounts is not None else [("enc", d, d, "DirectoryOrCreate")]):
        c["volumeMounts"].append({"name": name, "mountPath": inside, "readOnly": True})
        pod["spec"]["volumes"].append({"name": name, "hostPath": {"path": host, "type": kind}})
    pod["metadata"].setdefault("annotations", {})["ckalab.io/test-revision"] = str(time.time())  # always a change
    before, since = running_id(h), time.time()
    put_api_server_manifest(h.cluster, yaml.safe_dump(pod, sort_keys=False))
    if expect_down:
        wait_api_server_refused(h.cluster, since)
        return
    wait_for(lambda: running_id(h) not in ("", before) and api_answers(h), 150,
             "the API server to run with the edited manifest")
    if rewrite == "all":
        h.sh(f"kubectl get secrets -n {p['namespace']} -o json | kubectl replace -f -")
    elif rewrite:
        h.sh(f"kubectl get secret {rewrite} -n {p['namespace']} -o json | kubectl replace -f -")


def grade(h):
    return labs.check(h.lab, h.cluster)


# --- the lab ---------------------------------------------------------------------------------------

def test_every_provider_variant_is_known_to_the_grader():
    from ckalab import grading

    assert set(labs.load(LAB).data["params"]["provider"]["choices"]) == set(PROVIDERS)
    assert set(grading.load_grader(labs.graders_root() / f"{LAB}.py").KEY_BYTES) == set(PROVIDERS)


def test_fresh_lab_fails_with_diagnoses(lab):
    h = lab()
    r = grade(h)
    assert check_of(r, "test_config").message == (
        "No file /etc/kubernetes/enc/enc.yaml on the controlplane node. Look: ls -l /etc/kubernetes/enc "
        "(on the node: ckalab ssh controlplane).")
    assert check_of(r, "test_flag").message == (
        "/etc/kubernetes/manifests/kube-apiserver.yaml has no --encryption-provider-config: the API server stores "
        "Secrets as they are. Look: grep -- --encryption /etc/kubernetes/manifests/kube-apiserver.yaml (on the node: "
        "ckalab ssh controlplane).")
    assert check_of(r, "test_existing_encrypted").message == (
        "Secret 'db-creds' in namespace 'treasury' is stored in plain form (it starts with 'k8s', the protobuf marker, "
        "not 'k8s:enc:') in etcd. Look: etcdctl ... get /registry/secrets/treasury/db-creds | hexdump -C | head (on "
        "the node: ckalab ssh controlplane).")
    assert check_of(r, "test_reads_back").passed
    assert "in plain form" in check_of(r, "test_new_secret_encrypted").message


def test_reference_solution_passes_and_reset_leaves_nothing_encrypted(lab):
    h = lab()
    h.solve()
    r = h.grade()
    assert r.passed and r.score == r.max_score == 13, r.render()
    assert encrypted_in_etcd(h.cluster)
    h.reset()
    assert encrypted_in_etcd(h.cluster) == []
    assert "encryption-provider-config" not in h.cluster.component_flags("kube-apiserver")
    assert h.kubectl("get", "secret", "db-creds", "-n", "treasury", "-o", "jsonpath={.data.password}").stdout == \
        base64.b64encode(b"correct-horse-db-creds").decode()
    assert not (h.cluster.etc / "ckalab-teardown").exists()  # its copy of the learner's key is gone


def test_starting_another_control_plane_lab_undoes_the_encryption_first(lab):
    """A learner who moves on to another lab (or runs `ckalab restore-manifests`) without resetting
    this one: ckalab's API server could read none of the encrypted Secrets, so the teardown of every
    lab started here runs before the manifests come back."""
    h = lab()
    h.solve()
    assert encrypted_in_etcd(h.cluster)
    other = labs.load("admission-plugins")
    labs.contain(other, h.cluster)
    assert encrypted_in_etcd(h.cluster) == []
    assert h.cluster.status().state == "running"
    assert h.kubectl("get", "secret", "db-creds", "-n", "treasury", "-o", "jsonpath={.data.password}").stdout == \
        base64.b64encode(b"correct-horse-db-creds").decode()


def test_leaving_real_nodes_undoes_the_encryption_first(lab):
    """`ckalab up --nodes kwok` with the lab solved: the control plane as processes runs ckalab's
    command lines over the same etcd, so the teardown runs first, while the nodes still run (CI
    on c719a9e: a worker left real nodes after this lab's variants; its API server's storage
    never got ready and every later test on that worker failed)."""
    h = lab()
    h.solve()
    assert encrypted_in_etcd(h.cluster)
    switch_nodes(h.cluster, "kwok")
    try:
        assert h.cluster.status().state == "running"
        assert h.kubectl("get", "secret", "db-creds", "-n", "treasury", "-o", "jsonpath={.data.password}").stdout \
            == base64.b64encode(b"correct-horse-db-creds").decode()
    finally:
        switch_nodes(h.cluster, "real")
    assert encrypted_in_etcd(h.cluster) == []


def test_every_secret_of_the_cluster_rewritten_and_readable_after_reset_passes(lab):
    """The learner encrypted every Secret (kube-system's too) with secretbox: the teardown must
    write them all back in plain form while the key is at hand."""
    h = lab(provider="secretbox", namespace="ledger", secret="api-key", config="/etc/kubernetes/encryption/config.yaml")
    h.kubectl("create", "secret", "generic", "ckalab-test-elsewhere", "-n", "default", "--from-literal=k=kept")
    try:
        h.solve()
        h.sh("kubectl get secrets -A -o json | kubectl replace -f - >/dev/null")
        r = h.grade()
        assert r.passed, r.render()
        assert "/registry/secrets/default/ckalab-test-elsewhere" in encrypted_in_etcd(h.cluster)
        h.reset()
        assert encrypted_in_etcd(h.cluster) == []
        h.kubectl("get", "secrets", "-A", "-o", "json")  # every one decodes with ckalab's API server
        assert h.kubectl("get", "secret", "ckalab-test-elsewhere", "-n", "default", "-o",
                         "jsonpath={.data.k}").stdout == base64.b64encode(b"kept").decode()
    finally:
        h.kubectl("delete", "secret", "ckalab-test-elsewhere", "-n", "default", "--ignore-not-found", check=False)


def test_api_server_down_checks_report_from_the_node(lab):
    h = lab()
    answer(h, config=config_text(key=base64.b64encode(b"0123456789").decode()), expect_down=True)
    t = time.monotonic()
    r = grade(h)
    assert time.monotonic() - t < 40
    assert check_of(r, "test_config").message == (
        "The secret of key 'key1' in /etc/kubernetes/enc/enc.yaml decodes to 10 bytes; aescbc wants 16 or 24 or 32. "
        "Look: echo SECRET | base64 -d | wc -c.")
    assert check_of(r, "test_flag").passed
    msg = check_of(r, "test_api_server_up").message
    assert msg.startswith("The API server does not answer (") and "Look: crictl ps -a --name kube-apiserver" in msg
    assert "stored in plain form" in check_of(r, "test_existing_encrypted").message  # etcd is read all the same


# --- correct answers in other forms ---------------------------------------------------------------

def test_file_mounted_alone_with_two_keys_and_configmaps_too_passes(lab):
    """The configuration file mounted by itself under another container path, a second (older)
    key after the first, configmaps encrypted as well."""
    h = lab()
    p = h.params
    cfg = yaml.safe_load(config_text(resources=("secrets", "configmaps")))
    cfg["resources"][0]["providers"][0]["aescbc"]["keys"].append({"name": "key0", "secret": OTHER_KEY})
    answer(h, config=yaml.safe_dump(cfg), flag="/etc/enc-config.yaml",
           mounts=[("enc", p["config"], "/etc/enc-config.yaml", "File")])
    r = grade(h)
    assert r.passed, r.render()


def test_other_providers_after_the_first_passes(lab):
    """aescbc first, then an aesgcm key kept for reading, then identity; secretbox in its own variant."""
    h = lab(provider="secretbox", namespace="orders", secret="smtp-login")
    answer(h, config=config_text("secretbox", extra=[{"aesgcm": {"keys": [{"name": "old", "secret": OTHER_KEY}]}}]))
    r = grade(h)
    assert r.passed, r.render()


def test_short_key_and_flag_as_two_arguments_passes(lab):
    """A 16-byte aescbc key (AES-128), the flag given as "--encryption-provider-config PATH", the
    file's directory mounted under another container path."""
    h = lab()
    p = h.params
    answer(h, config=config_text(key=base64.b64encode(bytes(range(16))).decode()), flag=None,
           mounts=[("enc", "/etc/kubernetes/enc", "/srv/encryption", "DirectoryOrCreate")], extra_args=[
               "--encryption-provider-config", "/srv/encryption/" + p["config"].rsplit("/", 1)[1]])
    r = grade(h)
    assert r.passed, r.render()


# --- wrong answers -----------------------------------------------------------------------------------

MUTATIONS = {
    # name: (answer's keyword arguments, failing check, phrase of its message)
    "identity first": (
        dict(config=config_text(first={"identity": {}})),
        "test_config", "The first provider for secrets in /etc/kubernetes/enc/enc.yaml is identity: the first one "
                       "encrypts every write, and the task asks for aescbc"),
    "aesgcm instead of aescbc": (
        dict(config=config_text("aesgcm")),
        "test_config", "The first provider for secrets in /etc/kubernetes/enc/enc.yaml is aesgcm"),
    "configmaps instead of secrets": (
        dict(config=config_text(resources=("configmaps",))),
        "test_config", "No entry of /etc/kubernetes/enc/enc.yaml names secrets under resources"),
    "old secrets not rewritten": (
        dict(rewrite=None),
        "test_existing_encrypted", "Secret 'db-creds' in namespace 'treasury' is stored in plain form"),
    "only one secret rewritten": (
        dict(rewrite="db-creds"),
        "test_existing_encrypted", "Secret 'db-creds-previous' in namespace 'treasury' is stored in plain form"),
    "no identity: old secrets unreadable": (
        dict(config=config_text(identity=False), rewrite=None),
        "test_reads_back", "Reading Secret 'db-creds' in namespace 'treasury' through the API fails: "),
    "configuration not mounted": (
        dict(mounts=[], expect_down=True),
        "test_flag", "--encryption-provider-config=/etc/kubernetes/enc/enc.yaml is inside the container only: no "
                     "hostPath volume is mounted there"),
    "flag left out": (
        dict(flag=None, rewrite=None),
        "test_flag", "has no --encryption-provider-config: the API server stores Secrets as they are"),
    "key not base64": (
        dict(config=config_text(key="not base64!"), expect_down=True),
        "test_config", "The secret of key 'key1' in /etc/kubernetes/enc/enc.yaml is not base64"),
    "a key of 20 bytes": (
        dict(config=config_text(key=base64.b64encode(bytes(20)).decode()), expect_down=True),
        "test_config", "The secret of key 'key1' in /etc/kubernetes/enc/enc.yaml decodes to 20 bytes; aescbc wants 16 "
                       "or 24 or 32"),
    "configuration elsewhere": (
        dict(config_path="/etc/kubernetes/enc/other.yaml", flag="/etc/kubernetes/enc/other.yaml"),
        "test_config", "No file /etc/kubernetes/enc/enc.yaml on the controlplane node"),
    "wrong kind": (
        dict(config=config_text().replace("kind: EncryptionConfiguration", "kind: EncryptionConfig"),
             expect_down=True),
        "test_config", "kind 'EncryptionConfig'; the API server reads apiVersion apiserver.config.k8s.io/v1, kind "
                       "EncryptionConfiguration"),
}


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_wrong_answer_fails(lab, name):
    kwargs, failing, phrase = MUTATIONS[name]
    h = lab()
    answer(h, **kwargs)
    r = grade(h)
    assert not r.passed
    msg = check_of(r, failing).message
    assert phrase in msg, msg
    assert KEY not in json.dumps([c.message for c in r.checks])  # never echoes the key


def test_secret_replaced_with_another_password_fails(lab):
    h = lab()
    answer(h)
    h.sh("kubectl delete secret db-creds -n treasury && "
         "kubectl create secret generic db-creds -n treasury --from-literal=password=something-else")
    r = grade(h)
    assert check_of(r, "test_existing_encrypted").passed
    assert check_of(r, "test_reads_back").message.startswith(
        "Secret 'db-creds' in namespace 'treasury' reads back with another password than it was created with.")
