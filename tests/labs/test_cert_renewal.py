"""cert-renewal on real nodes: setup makes the API server's serving certificate and one client
certificate close to expiry (and the API server serves it), kubeadm on the node renews them, the
checks read the new notAfter on disk and the certificate the API server presents in a TLS
handshake; other correct renewals pass, wrong ones fail with their message, and the teardown puts
ckalab's original certificates back. Skipped unless CKALAB_REAL_NODES=1 (root).

    CKALAB_REAL_NODES=1 CKALAB_TEST_HOME=/tmp/ckt-x CKALAB_TEST_KEEP=1 \\
        .venv/bin/pytest tests/labs/test_cert_renewal.py -x -q

Every test starts from `reset` (teardown: originals back; then near expiry again) and the module
ends with the originals in place and the control plane healthy.
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import time

import pytest
from conftest import LabHarness, check_of, failed_ids
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ckalab import labs, pki
from ckalab.waiting import wait_for

LAB = "cert-renewal"
ALSO = ("front-proxy-client", "apiserver-kubelet-client", "apiserver-etcd-client")
CAS = {"apiserver": "ca", "apiserver-kubelet-client": "ca", "front-proxy-client": "front-proxy-ca",
       "apiserver-etcd-client": "etcd/ca"}


@pytest.fixture(scope="module")
def originals(real_nodes):
    """ckalab's certificates before the lab ran; the module ends with exactly these back."""
    labs.contain(labs.load(LAB), real_nodes)  # an earlier run's lab state undone first
    pki_dir = real_nodes.etc / "pki"
    before = {p.relative_to(pki_dir): p.read_bytes() for p in pki_dir.rglob("*") if p.is_file()}
    yield before
    labs.contain(labs.load(LAB), real_nodes)
    assert {p.relative_to(pki_dir): p.read_bytes() for p in pki_dir.rglob("*") if p.is_file()} == before


@pytest.fixture
def lab(originals, real_nodes):
    def make(also: str = "front-proxy-client", days: int = 3) -> LabHarness:
        h = LabHarness(real_nodes, LAB)
        h.lab = h.lab.with_params(also=also, days=days)
        if h.workdir.exists():
            shutil.rmtree(h.workdir)
        h.reset()
        return h
    return make


# --- acting on the node ---------------------------------------------------------------------------

def on_node(h, script: str) -> str:
    argv, env = h.cluster.shell("controlplane", ["sh", "-ec", script])
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def served_serial(h) -> int | None:
    import socket
    import ssl

    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    try:
        with socket.create_connection(("127.0.0.1", h.cluster.load_state()["ports"]["apiserver"]), timeout=2) as s:
            with ctx.wrap_socket(s) as tls:
                return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True)).serial_number
    except OSError:
        return None


def disk(h, name: str) -> x509.Certificate:
    return pki.load_cert((h.cluster.etc / "pki" / f"{name}.crt").read_bytes())


def wait_serving_disk(h) -> None:
    """Until the API server answers and presents the serving certificate on disk."""
    wait_for(lambda: h.kube.ping() and served_serial(h) == disk(h, "apiserver").serial_number, 150,
             "the API server to serve the certificate on disk")


def restart_by_moving(h) -> None:
    """The exam's restart of a static pod: the manifest out of the folder, then back."""
    m, out = h.cluster.etc / "manifests" / "kube-apiserver.yaml", h.cluster.etc / "kube-apiserver.yaml"
    m.rename(out)
    wait_for(lambda: not on_node(h, "crictl pods -q --name kube-apiserver --state ready").strip(), 90,
             "the old pod to be removed")  # put back earlier, the kubelet can wait minutes to start it
    time.sleep(5)
    out.rename(m)
    wait_serving_disk(h)


def renew(h, *names: str) -> None:
    on_node(h, "".join(f"kubeadm certs renew {n} >/dev/null 2>&1\n" for n in names))


def issue(h, name: str, ca: str | None = "default", days: int = 365, new_key: bool = False, write_key: bool = True,
          drop_san: str | None = None, eku=None, cn: str | None = None) -> None:
    """A certificate written over pki/NAME.crt by hand (openssl's job, done with the same library
    the checks use): from ckalab's current one, with the changes asked for; ca=None: self-signed."""
    d = h.cluster.etc / "pki"
    current = disk(h, name)
    key = pki.new_key() if new_key else pki.load_key((d / f"{name}.key").read_bytes())
    ca_name = CAS[name] if ca == "default" else ca
    signer, signer_key = ((pki.load_cert((d / f"{ca_name}.crt").read_bytes()), pki.load_key((d / f"{ca_name}.key").read_bytes()))
                          if ca_name else (None, key))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]) if cn else current.subject
    now = dt.datetime.now(dt.timezone.utc)
    b = (x509.CertificateBuilder().subject_name(subject).issuer_name(signer.subject if signer else subject)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days)))
    for ext in current.extensions:
        value = ext.value
        if isinstance(value, x509.AuthorityKeyIdentifier):
            continue
        if isinstance(value, x509.SubjectAlternativeName) and drop_san:
            value = x509.SubjectAlternativeName([g for g in value if str(getattr(g, "value", "")) != drop_san])
        if isinstance(value, x509.ExtendedKeyUsage) and eku:
            value = x509.ExtendedKeyUsage(eku)
        b = b.add_extension(value, ext.critical)
    cert = b.sign(signer_key, hashes.SHA256())
    (d / f"{name}.crt").write_bytes(pki.cert_pem(cert))
    if new_key and write_key:
        (d / f"{name}.key").write_bytes(pki.key_pem(key))


def test_every_variant_of_the_lab_is_tested():
    assert set(labs.load(LAB).data["params"]["also"]["choices"]) == set(ALSO)


# --- the start, the reference solution, the teardown ---------------------------------------------

def test_setup_makes_the_served_certificate_close_to_expiry(lab):
    h = lab("front-proxy-client", days=3)
    now = dt.datetime.now(dt.timezone.utc)
    for name in ("apiserver", "front-proxy-client"):
        left = disk(h, name).not_valid_after_utc - now
        assert dt.timedelta(days=2, hours=23) < left <= dt.timedelta(days=3), name
    assert served_serial(h) == disk(h, "apiserver").serial_number
    out = on_node(h, "kubeadm certs check-expiration 2>/dev/null")
    assert [line for line in out.splitlines() if line.startswith("apiserver ")][0].split()[6].startswith("2d")
    r = h.grade()
    assert failed_ids(r) == {"test_renewed_on_disk", "test_renewed_identity", "test_served", "test_restarted"}
    msg = check_of(r, "test_renewed_on_disk").message
    assert msg.startswith("/etc/kubernetes/pki/apiserver.crt is valid until 2")
    assert msg.endswith(", 2 days from now: it has not been renewed. Look: kubeadm certs check-expiration "
                        "(on the node: ckalab ssh controlplane).")


@pytest.mark.parametrize("also", ALSO)
def test_reference_solution_passes(lab, also):
    h = lab(also)
    h.solve()
    r = h.grade()
    assert r.passed and r.score == r.max_score == 12, r.render()


def test_teardown_puts_the_originals_back(lab, originals):
    h = lab("apiserver-etcd-client")
    renew(h, "all")
    labs.contain(h.lab, h.cluster)
    pki_dir = h.cluster.etc / "pki"
    assert {p.relative_to(pki_dir): p.read_bytes() for p in pki_dir.rglob("*") if p.is_file()} == originals
    wait_serving_disk(h)
    labs.contain(h.lab, h.cluster)  # nothing kept any more: nothing to do


# --- correct renewals in other forms --------------------------------------------------------------

def test_renew_all_and_crictl_stop_passes(lab):
    h = lab("apiserver-kubelet-client")
    renew(h, "all")
    on_node(h, "crictl stop $(crictl ps -q --name kube-apiserver) >/dev/null")
    time.sleep(3)
    wait_serving_disk(h)
    r = h.grade()
    assert r.passed, r.render()


def test_renewal_by_hand_from_the_ca_passes(lab):
    h = lab("front-proxy-client")
    issue(h, "apiserver", new_key=True)
    issue(h, "front-proxy-client")
    restart_by_moving(h)
    r = h.grade()
    assert r.passed, r.render()


def test_renew_then_a_manifest_edit_restarts_passes(lab):
    h = lab("apiserver-etcd-client")
    renew(h, h.params["also"], "apiserver")
    m = h.cluster.etc / "manifests" / "kube-apiserver.yaml"
    tmp = h.cluster.etc / ".kube-apiserver.yaml.test"
    tmp.write_text(m.read_text().replace("\n    - --allow-privileged=true", "\n    - --allow-privileged=true\n    - --v=1", 1))
    tmp.replace(m)
    wait_for(lambda: h.cluster.runs_manifest("kube-apiserver") and h.kube.ping(), 150, "the edited API server")
    r = h.grade()
    assert r.passed, r.render()


# --- wrong renewals -------------------------------------------------------------------------------

def _kubelet_restart(h):
    renew(h, "apiserver", h.params["also"])
    on_node(h, "systemctl restart kubelet")
    time.sleep(10)


def _moved_out(h):
    renew(h, "apiserver", h.params["also"])
    (h.cluster.etc / "manifests" / "kube-apiserver.yaml").rename(h.cluster.etc / "kube-apiserver.yaml")
    wait_for(lambda: not h.kube.ping(), 90, "the API server to stop")
    time.sleep(5)


MUTATIONS = {
    # name: (also, action, failing check, phrase of its message)
    "nothing renewed": (
        "front-proxy-client", lambda h: None,
        "test_renewed_on_disk", "/etc/kubernetes/pki/apiserver.crt is valid until"),
    "only the serving certificate renewed": (
        "front-proxy-client", lambda h: (renew(h, "apiserver"), restart_by_moving(h)),
        "test_renewed_on_disk", "/etc/kubernetes/pki/front-proxy-client.crt is valid until"),
    "only the client certificate renewed": (
        "apiserver-kubelet-client", lambda h: (renew(h, "apiserver-kubelet-client"), restart_by_moving(h)),
        "test_renewed_on_disk", "/etc/kubernetes/pki/apiserver.crt is valid until"),
    "renewed but the API server not restarted": (
        "apiserver-etcd-client", lambda h: (renew(h, "apiserver", "apiserver-etcd-client"), wait_serving_disk(h)),
        "test_restarted", "before /etc/kubernetes/pki/apiserver-etcd-client.crt was written at"),
    "the kubelet restarted instead of the static pod": (
        "front-proxy-client", _kubelet_restart,
        "test_restarted", "it still uses the client certificate it read at its start"),
    "the manifest moved out and not back": (
        "front-proxy-client", _moved_out,
        "test_served", "presents no certificate"),
    "a self-signed serving certificate": (
        # not restarted: no client trusts what it would serve, and the check reads the file
        "front-proxy-client", lambda h: (issue(h, "apiserver", ca=None), issue(h, "front-proxy-client")),
        "test_renewed_identity", "/etc/kubernetes/pki/apiserver.crt is issued by 'CN=kube-apiserver' and does not "
                                 "verify against /etc/kubernetes/pki/ca.crt"),
    "the client certificate signed by the cluster CA instead of the front-proxy CA": (
        "front-proxy-client", lambda h: (renew(h, "apiserver"), issue(h, "front-proxy-client", ca="ca"),
                                         restart_by_moving(h)),
        "test_renewed_identity", "/etc/kubernetes/pki/front-proxy-client.crt is issued by 'CN=kubernetes' and does "
                                 "not verify against /etc/kubernetes/pki/front-proxy-ca.crt"),
    "a new key for the certificate, the old key file kept": (
        "apiserver-kubelet-client", lambda h: (renew(h, "apiserver"),
                                               issue(h, "apiserver-kubelet-client", new_key=True, write_key=False)),
        "test_renewed_identity", "/etc/kubernetes/pki/apiserver-kubelet-client.crt and "
                                 "/etc/kubernetes/pki/apiserver-kubelet-client.key are not a pair"),
    "a SAN dropped": (
        "front-proxy-client", lambda h: (issue(h, "apiserver", drop_san="10.96.0.1"), renew(h, "front-proxy-client"),
                                         restart_by_moving(h)),
        "test_renewed_identity", "/etc/kubernetes/pki/apiserver.crt lost the names IP:10.96.0.1 it had before"),
    "client auth instead of server auth": (
        "front-proxy-client", lambda h: (issue(h, "apiserver", eku=[ExtendedKeyUsageOID.CLIENT_AUTH]),
                                         renew(h, "front-proxy-client")),
        "test_renewed_identity", "/etc/kubernetes/pki/apiserver.crt has extended key usage client auth, not "
                                 "server auth as before"),
    "another subject": (
        "apiserver-etcd-client", lambda h: (renew(h, "apiserver"), issue(h, "apiserver-etcd-client", cn="apiserver"),
                                            restart_by_moving(h)),
        "test_renewed_identity", "/etc/kubernetes/pki/apiserver-etcd-client.crt is now for 'CN=apiserver', not "
                                 "'CN=kube-apiserver-etcd-client' as before"),
    "renewed for 30 days only": (
        "front-proxy-client", lambda h: (issue(h, "apiserver", days=30), renew(h, "front-proxy-client"),
                                         restart_by_moving(h)),
        "test_renewed_on_disk", "/etc/kubernetes/pki/apiserver.crt is valid until"),
}


@pytest.mark.parametrize("name", list(MUTATIONS))
def test_wrong_renewal_fails(lab, name):
    also, action, failing, phrase = MUTATIONS[name]
    h = lab(also)
    try:
        action(h)
    finally:
        (h.cluster.etc / "kube-apiserver.yaml").unlink(missing_ok=True)  # reset restores ckalab's manifest
    t = time.monotonic()
    r = labs.check(h.lab, h.cluster)
    assert time.monotonic() - t < 20
    assert not r.passed
    msg = check_of(r, failing).message
    assert phrase in msg, msg
    if name == "renewed for 30 days only":
        assert ", 29 days from now: it has not been renewed" in msg, msg
