"""The local backend's PKI matches kubeadm's layout: names, subjects, issuers, SANs, usages, pairs."""

import os
import stat
from pathlib import Path

import pytest
import yaml

from ckalab import pki

# file -> (subject CN, subject O, issuer CN, extended usages, is CA)
KUBEADM_CERTS = {
    "ca": ("kubernetes", [], "kubernetes", [], True),
    "apiserver": ("kube-apiserver", [], "kubernetes", ["server auth"], False),
    "apiserver-kubelet-client": ("kube-apiserver-kubelet-client", ["kubeadm:cluster-admins"], "kubernetes",
                                 ["client auth"], False),
    "apiserver-etcd-client": ("kube-apiserver-etcd-client", [], "etcd-ca", ["client auth"], False),
    "front-proxy-ca": ("front-proxy-ca", [], "front-proxy-ca", [], True),
    "front-proxy-client": ("front-proxy-client", [], "front-proxy-ca", ["client auth"], False),
    "etcd/ca": ("etcd-ca", [], "etcd-ca", [], True),
    "etcd/server": ("controlplane", [], "etcd-ca", ["server auth", "client auth"], False),
    "etcd/peer": ("controlplane", [], "etcd-ca", ["server auth", "client auth"], False),
    "etcd/healthcheck-client": ("kube-etcd-healthcheck-client", [], "etcd-ca", ["client auth"], False),
}
ISSUER_FILE = {"kubernetes": "ca", "etcd-ca": "etcd/ca", "front-proxy-ca": "front-proxy-ca"}


@pytest.fixture(scope="module")
def pki_dir(cluster) -> Path:
    return Path(cluster.pki_dir)


@pytest.mark.parametrize("base", sorted(KUBEADM_CERTS))
def test_cert_subject_issuer_usages_and_pair(pki_dir, base):
    cn, orgs, issuer, usages, is_ca = KUBEADM_CERTS[base]
    cert = pki.load_cert(pki_dir / f"{base}.crt")
    info = pki.describe(cert)
    assert (info.subject_cn, info.subject_orgs, info.issuer_cn) == (cn, orgs, issuer)
    assert info.ext_usages == usages
    assert info.is_ca is is_ca
    assert info.key_bits == 2048
    assert pki.key_matches(pki.load_key(pki_dir / f"{base}.key"), cert)
    assert pki.signed_by(cert, pki.load_cert(pki_dir / f"{ISSUER_FILE[issuer]}.crt"))
    assert oct((pki_dir / f"{base}.key").stat().st_mode & 0o777) == "0o600"


def test_apiserver_sans_as_kubeadm(pki_dir):
    info = pki.describe(pki.load_cert(pki_dir / "apiserver.crt"))
    assert set(info.dns_names) == {"controlplane", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                                   "kubernetes.default.svc.cluster.local"}
    assert set(info.ip_addresses) == {"10.96.0.1", "127.0.0.1"}


def test_etcd_server_sans(pki_dir):
    info = pki.describe(pki.load_cert(pki_dir / "etcd/server.crt"))
    assert set(info.dns_names) == {"controlplane", "localhost"}
    assert set(info.ip_addresses) == {"127.0.0.1", "::1"}


def test_service_account_key_pair(pki_dir):
    key = pki.load_key(pki_dir / "sa.key")
    assert pki.public_pem(key) == (pki_dir / "sa.pub").read_bytes()


def test_a_wrong_issuer_is_detected(pki_dir):
    """signed_by is the check the graders rely on: it must say no for the wrong CA."""
    etcd_server = pki.load_cert(pki_dir / "etcd/server.crt")
    assert not pki.signed_by(etcd_server, pki.load_cert(pki_dir / "ca.crt"))


@pytest.mark.parametrize("conf,cn,orgs", [
    ("admin.conf", "kubernetes-admin", ["kubeadm:cluster-admins"]),
    ("super-admin.conf", "kubernetes-super-admin", ["system:masters"]),
    ("controller-manager.conf", "system:kube-controller-manager", []),
    ("scheduler.conf", "system:kube-scheduler", []),
])
def test_kubeconfigs_embed_kubeadm_identities(pki_dir, conf, cn, orgs):
    import base64

    data = yaml.safe_load((pki_dir.parent / conf).read_text())
    user = data["users"][0]["user"]
    cert = pki.load_cert(base64.b64decode(user["client-certificate-data"]))
    info = pki.describe(cert)
    assert (info.subject_cn, info.subject_orgs, info.ext_usages) == (cn, orgs, ["client auth"])
    assert pki.signed_by(cert, pki.load_cert(pki_dir / "ca.crt"))
    assert base64.b64decode(data["clusters"][0]["cluster"]["certificate-authority-data"]) == (pki_dir / "ca.crt").read_bytes()


def test_write_pair_creates_the_key_private_from_the_start(tmp_path):
    """The key file is 0600 when it is created (no chmod afterwards), whatever the umask."""
    key, cert = pki.make_ca("x")
    old = os.umask(0)
    try:
        pki.write_pair(tmp_path, "x", key, cert)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "x.key").stat().st_mode) == 0o600
