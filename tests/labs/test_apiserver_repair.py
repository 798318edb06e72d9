"""apiserver-repair on real nodes: setup really takes the API server down, the checks report from
the node's files while it is down (and quickly), the reference solution and other correct repairs
pass, and wrong repairs fail with their message. Skipped unless CKALAB_REAL_NODES=1 (root).

    CKALAB_REAL_NODES=1 CKALAB_TEST_HOME=/tmp/ckt-x CKALAB_TEST_KEEP=1 \\
        .venv/bin/pytest tests/labs/test_apiserver_repair.py -x -q

The module never leaves the cluster broken: every test starts from `reset` (which restores
ckalab's manifests and waits for /readyz) and the module ends with the control plane restored.
"""

from __future__ import annotations

import json
import re
import shutil
import ssl
import subprocess
import time
import urllib.request

import pytest
from conftest import VENV_BIN, LabHarness, check_of, failed_ids, put_api_server_manifest

from ckalab import labs, notebook
from ckalab.waiting import wait_for

LAB = "apiserver-repair"
PKI = "/etc/kubernetes/pki"
FAULTS = ("etcd-certfile", "client-ca-file", "tls-cert-file", "key-mismatch", "expired-cert")
FILE_CHECKS = ("test_files_exist", "test_pairs_match", "test_roles")


@pytest.fixture(scope="module")
def contained(real_nodes):
    yield real_nodes
    labs.restore_control_plane(real_nodes)  # never leave the cluster broken


@pytest.fixture
def lab(contained):
    def make(fault: str = "etcd-certfile") -> LabHarness:
        h = LabHarness(contained, LAB)
        h.lab = h.lab.with_params(fault=fault)
        if h.workdir.exists():
            shutil.rmtree(h.workdir)
        h.reset()
        return h
    return make


# --- acting on the node's files (the controlplane's /etc/kubernetes is the cluster's etc/) ------

def manifest_path(h):
    return h.cluster.etc / "manifests" / "kube-apiserver.yaml"


def edit(h, change) -> None:
    """The manifest with `change` made (put there the quick way: conftest.put_api_server_manifest)."""
    put_api_server_manifest(h.cluster, change(manifest_path(h).read_text()))


def set_flags(h, **flags) -> None:
    def change(text):
        for name, value in flags.items():
            flag = name.replace("_", "-")
            text, n = re.subn(rf"^( *- --{flag}=).*$", lambda m: m.group(1) + value, text, flags=re.M)
            assert n == 1, flag
        return text
    edit(h, change)


def host(h, node_path: str) -> str:
    return str(h.cluster.etc) + node_path.removeprefix("/etc/kubernetes")


def readyz_unverified(h) -> bool:
    """Whether an API server answers at all (its certificate not checked), like curl -k."""
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    server = f"https://127.0.0.1:{h.cluster.load_state()['ports']['apiserver']}"
    try:
        with urllib.request.urlopen(f"{server}/readyz", context=ctx, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def wait_serving(h, since: float) -> None:
    """Until the API server started from the edited manifest answers (~15 s)."""
    time.sleep(3)  # the old container is stopped first
    wait_for(lambda: readyz_unverified(h), 120, "the API server to run with the edited manifest")


def serving_cert(h, name: str, ca: str = "ca", sans: str | None = None) -> None:
    """A serving certificate pki/NAME.crt/.key signed by pki/CA (or self-signed with ca=None)."""
    pki = h.cluster.pki_dir
    sans = sans or subprocess.run(
        f"openssl x509 -in {pki}/apiserver.crt -noout -ext subjectAltName | tail -n +2 | "
        "sed 's/^ *//; s/IP Address:/IP:/g; s/, /,/g'", shell=True, capture_output=True, text=True).stdout.strip()
    sign = (f"-CA {pki}/{ca}.crt -CAkey {pki}/{ca}.key -set_serial 0x$(openssl rand -hex 8)" if ca
            else f"-signkey {pki}/{name}.key")
    h.sh(f"openssl genrsa -out {pki}/{name}.key 2048 2>/dev/null\n"
         f"openssl req -new -key {pki}/{name}.key -subj /CN=kube-apiserver -out {h.workdir}/{name}.csr\n"
         f"printf 'subjectAltName={sans}\\nextendedKeyUsage=serverAuth\\n' > {h.workdir}/{name}.ext\n"
         f"openssl x509 -req -in {h.workdir}/{name}.csr {sign} -days 30 -extfile {h.workdir}/{name}.ext "
         f"-out {pki}/{name}.crt 2>/dev/null")


@pytest.fixture
def made_files(contained):
    """PKI files a test creates (the learner's, in real life): removed afterwards."""
    made: list[str] = []
    yield made
    for name in made:
        for ext in (".crt", ".key"):
            (contained.etc / "pki" / f"{name}{ext}").unlink(missing_ok=True)


def test_every_variant_of_the_lab_is_tested():
    assert set(labs.load(LAB).data["params"]["fault"]["choices"]) == set(FAULTS)


# --- the broken start ----------------------------------------------------------------------------

def test_setup_takes_the_api_server_down_and_checks_report_from_the_node(lab):
    h = lab("etcd-certfile")
    assert "--etcd-certfile=/etc/kubernetes/pki/apiserver-etcd-client.pem" in manifest_path(h).read_text()
    assert h.cluster.status().state == "degraded"
    notebook.require_running(h.cluster, allow_degraded=True)  # the lab's notebook opens (use_lab) ...
    with pytest.raises(notebook.StopHere, match=r"is degraded\. Start it in a terminal with: "):
        notebook.require_running(h.cluster)  # ... where another lab's would stop with the one line
    t = time.monotonic()
    r = labs.check(h.lab, h.cluster)  # what `ckalab check` does: no "cluster not running" refusal
    assert time.monotonic() - t < 20  # never hangs on the API server that is down
    assert r.score == 1 and check_of(r, "test_manifest").passed
    assert check_of(r, "test_files_exist").message == (
        "--etcd-certfile=/etc/kubernetes/pki/apiserver-etcd-client.pem: no such file on the controlplane node, "
        "and the API server cannot start without it. Look: ls -l /etc/kubernetes/pki, and the container's log "
        "(crictl ps -a --name kube-apiserver, then crictl logs CONTAINER-ID; on the node: ckalab ssh controlplane).")
    msg = check_of(r, "test_readyz").message
    assert msg.startswith("The API server at https://127.0.0.1:") and " does not answer (" in msg
    assert "Look: crictl ps -a --name kube-apiserver, then crictl logs CONTAINER-ID" in msg
    assert check_of(r, "test_kubectl_works").message == (
        'Not checked yet: first fix "the API server answers /readyz, with a certificate that verifies against the '
        'cluster CA".')
    # The message diagnoses; the right file is left to the learner.
    assert "apiserver-etcd-client.crt" not in " ".join(c.message for c in r.checks)
    # `ckalab check` shows that diagnosis too, not "the cluster stopped answering".
    cli = subprocess.run([f"{VENV_BIN}/ckalab", "check", LAB, "--name", h.cluster.name, "--json"], env=h.env(),
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 1, cli.stderr
    assert {c["id"]: c["passed"] for c in json.loads(cli.stdout)["checks"]}["test_files_exist"] is False


@pytest.mark.parametrize("fault, failing, phrase", [
    ("client-ca-file", "test_files_exist", "--client-ca-file=/etc/kubernetes/pki/ca.pem: no such file"),
    ("tls-cert-file", "test_files_exist", "--tls-cert-file=/etc/kubernetes/pki/apiserver-new.crt: no such file"),
    ("key-mismatch", "test_pairs_match",
     "--tls-cert-file=/etc/kubernetes/pki/apiserver-renewed.crt and --tls-private-key-file=/etc/kubernetes/pki/"
     "apiserver.key are not a pair: the certificate was issued for another key"),
    ("expired-cert", "test_roles", "--tls-cert-file=/etc/kubernetes/pki/apiserver-backup.crt is valid from "),
])
def test_each_variant_breaks_and_its_reference_solution_repairs(lab, fault, failing, phrase):
    h = lab(fault)  # setup returns once the end state is reached (expired-cert: served, refused)
    r = labs.check(h.lab, h.cluster)
    assert failed_ids(r) >= {failing, "test_readyz", "test_kubectl_works"}
    assert phrase in check_of(r, failing).message, check_of(r, failing).message
    if fault == "expired-cert":
        assert "certificate has expired" in check_of(r, "test_readyz").message
    h.solve()
    r = h.grade()
    assert r.passed, r.render()


def test_reference_solution_passes_and_reset_breaks_it_again(lab):
    h = lab("etcd-certfile")
    h.solve()
    r = h.grade()
    assert r.passed and r.score == r.max_score == 15, r.render()
    h.reset()  # restores, waits for /readyz, and sets the lab up again
    assert h.cluster.status().state == "degraded"
    aside = sorted((h.cluster.dir / "manifests.edited").glob("kube-apiserver.*.yaml"))
    assert aside  # the learner's edited manifest is kept, never deleted


# --- correct repairs in other forms ----------------------------------------------------------------

def test_key_mismatch_repaired_by_the_old_certificate_passes(lab):
    h = lab("key-mismatch")
    set_flags(h, tls_cert_file=f"{PKI}/apiserver.crt")
    wait_serving(h, time.time())
    assert h.grade().passed


def test_a_new_ca_signed_serving_certificate_passes(lab, made_files):
    h = lab("tls-cert-file")
    made_files.append("apiserver-mine")
    serving_cert(h, "apiserver-mine")
    set_flags(h, tls_cert_file=f"{PKI}/apiserver-mine.crt", tls_private_key_file=f"{PKI}/apiserver-mine.key")
    wait_serving(h, time.time())
    r = h.grade()
    assert r.passed, r.render()


def test_the_missing_file_supplied_under_the_manifests_name_passes(lab):
    """Instead of editing the manifest, the learner gives the file it names: a copy of the right pair."""
    h = lab("etcd-certfile")
    pki = h.cluster.pki_dir
    try:
        shutil.copy(f"{pki}/apiserver-etcd-client.crt", f"{pki}/apiserver-etcd-client.pem")
        wait_serving(h, time.time())
        r = h.grade()
        assert r.passed, r.render()
    finally:
        (h.cluster.etc / "pki" / "apiserver-etcd-client.pem").unlink(missing_ok=True)


# --- wrong repairs --------------------------------------------------------------------------------

def _no_client_ca(text):
    return re.sub(r"^ *- --client-ca-file=.*\n", "", text, flags=re.M)


def _tab_indent(text):
    return text.replace("\n    - --allow-privileged", "\n\t- --allow-privileged", 1)


def _outside_mounts(h):
    subprocess.run(["cp", f"{h.cluster.pki_dir}/apiserver-etcd-client.crt", f"{h.cluster.etc}/apiserver-etcd-client.crt"],
                   check=True)
    set_flags(h, etcd_certfile="/etc/kubernetes/apiserver-etcd-client.crt")


MUTATIONS = {
    # name: (fault, action, failing check, phrase of its message, wait until the API server serves)
    "etcd client cert from the cluster CA": (
        "etcd-certfile", lambda h: set_flags(h, etcd_certfile=f"{PKI}/apiserver-kubelet-client.crt",
                                             etcd_keyfile=f"{PKI}/apiserver-kubelet-client.key"),
        "test_roles", "is issued by 'kubernetes', not by the CA etcd trusts for clients", False),
    "etcd's own serving certificate as client": (
        "etcd-certfile", lambda h: set_flags(h, etcd_certfile=f"{PKI}/etcd/server.crt",
                                             etcd_keyfile=f"{PKI}/etcd/server.key"),
        "test_roles", "is etcd's own certificate ('controlplane'), not a client certificate", False),
    "healthcheck cert with the old key": (
        "etcd-certfile", lambda h: set_flags(h, etcd_certfile=f"{PKI}/etcd/healthcheck-client.crt"),
        "test_pairs_match", "--etcd-certfile=/etc/kubernetes/pki/etcd/healthcheck-client.crt and --etcd-keyfile="
                            "/etc/kubernetes/pki/apiserver-etcd-client.key are not a pair", False),
    "etcd CA swapped for the cluster CA": (
        "etcd-certfile", lambda h: set_flags(h, etcd_certfile=f"{PKI}/apiserver-etcd-client.crt",
                                             etcd_cafile=f"{PKI}/ca.crt"),
        "test_roles", "--etcd-cafile=/etc/kubernetes/pki/ca.crt ('kubernetes') did not sign etcd's serving "
                      "certificate (issuer 'etcd-ca')", False),
    "a cert copied where the pod cannot see it": (
        "etcd-certfile", _outside_mounts,
        "test_files_exist", "--etcd-certfile=/etc/kubernetes/apiserver-etcd-client.crt is outside every directory "
                            "the static pod mounts (/etc/kubernetes/pki, /etc/kubernetes/audit-policy.yaml, "
                            "/var/log/kubernetes/audit): the container cannot see it", False),
    "client CA: etcd's CA": (
        "client-ca-file", lambda h: set_flags(h, client_ca_file=f"{PKI}/etcd/ca.crt"),
        "test_kubectl_works", "The API server does not accept the admin kubeconfig's client certificate "
                              "(401 Unauthorized)", True),
    "client CA: the front-proxy CA": (
        "client-ca-file", lambda h: set_flags(h, client_ca_file=f"{PKI}/front-proxy-ca.crt"),
        "test_roles", "--client-ca-file=/etc/kubernetes/pki/front-proxy-ca.crt ('front-proxy-ca') did not sign the "
                      "admin kubeconfig's client certificate (issuer 'kubernetes')", False),
    "client CA flag removed": (
        "client-ca-file", lambda h: edit(h, _no_client_ca),
        "test_files_exist", "/etc/kubernetes/manifests/kube-apiserver.yaml has no --client-ca-file: the API server "
                            "needs it to accept client certificates such as the admin kubeconfig", False),
    "serving with the kubelet client certificate": (
        "tls-cert-file", lambda h: set_flags(h, tls_cert_file=f"{PKI}/apiserver-kubelet-client.crt",
                                             tls_private_key_file=f"{PKI}/apiserver-kubelet-client.key"),
        "test_readyz", "answers, but its serving certificate does not verify against the cluster CA", True),
    "a self-signed serving certificate": (
        "tls-cert-file", "self-signed",
        "test_roles", "--tls-cert-file=/etc/kubernetes/pki/apiserver-mine.crt is issued by 'kube-apiserver', not by "
                      "the cluster CA 'kubernetes' that kubectl and the kubelets trust", False),
    "key mismatch: a key of another certificate": (
        "key-mismatch", lambda h: set_flags(h, tls_private_key_file=f"{PKI}/apiserver-kubelet-client.key"),
        "test_pairs_match", "--tls-cert-file=/etc/kubernetes/pki/apiserver-renewed.crt and --tls-private-key-file="
                            "/etc/kubernetes/pki/apiserver-kubelet-client.key are not a pair", False),
    "manifest indented with a tab": (
        "key-mismatch", lambda h: edit(h, _tab_indent),
        "test_manifest", "is not valid YAML", False),
    "manifest moved out of the folder": (
        "tls-cert-file", lambda h: manifest_path(h).rename(h.cluster.etc / "kube-apiserver.yaml.moved"),
        "test_manifest", "/etc/kubernetes/manifests/kube-apiserver.yaml is missing on the controlplane node, so the "
                         "kubelet runs no kube-apiserver", False),
}


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_wrong_repair_fails(lab, made_files, name):
    fault, action, failing, phrase, wait = MUTATIONS[name]
    h = lab(fault)
    try:
        if action == "self-signed":
            made_files.append("apiserver-mine")
            serving_cert(h, "apiserver-mine", ca=None)
            set_flags(h, tls_cert_file=f"{PKI}/apiserver-mine.crt", tls_private_key_file=f"{PKI}/apiserver-mine.key")
        else:
            action(h)
        if wait:
            wait_serving(h, time.time())
        r = labs.check(h.lab, h.cluster)
        assert not r.passed
        msg = check_of(r, failing).message
        assert phrase in msg, msg
    finally:
        (h.cluster.etc / "apiserver-etcd-client.crt").unlink(missing_ok=True)
        moved = h.cluster.etc / "kube-apiserver.yaml.moved"
        if moved.exists():
            moved.unlink()  # restore_manifests (the next reset) writes ckalab's copy
