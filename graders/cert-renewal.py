"""Grader for cert-renewal: the API server's serving certificate and one of its client
certificates were made close to expiry; the learner renews them with kubeadm on the controlplane
node and restarts the API server's static pod.

Graded by the files (a new notAfter far away, still signed by the right CA, still matching the
key file, the same names and usages as ckalab's original) and by behaviour: the certificate the
API server presents in a TLS handshake is the renewed file (serial and notAfter), and its running
container started after the renewed client certificate was written (the API server reads client
certificates only when it starts). The file checks work while the API server is down; the
handshake uses a short timeout. The node's files and container are read with ckalab.controlplane.
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
from pathlib import Path
from urllib.parse import urlparse

from ckalab import pki
from ckalab.controlplane import ON_NODE, PKI, admin_kubeconfig, container_state, containers, read_file, why
from ckalab.grading import check, expect, fail, fixture, skip

LOOK_EXPIRY = f"Look: kubeadm certs check-expiration ({ON_NODE})."
CAS = {"apiserver": "ca", "apiserver-kubelet-client": "ca", "front-proxy-client": "front-proxy-ca",
       "apiserver-etcd-client": "etcd/ca"}
MIN_DAYS = 180  # a renewed certificate: kubeadm gives a year; anything under half of that is not one
TIMEOUT = 4


def _names(lab) -> list[str]:
    return ["apiserver", lab.params["also"]]


def _cert(cluster, name: str):
    path = f"{PKI}/{name}.crt"
    data = read_file(cluster, path)
    expect(data is not None, f"{path} is missing on the controlplane node. Look: ls -l {PKI} ({ON_NODE}).")
    try:
        return pki.load_cert(data)
    except ValueError:
        fail(f"{path} is not a PEM certificate. Look: openssl x509 -in {path} -noout -text ({ON_NODE}).")


def _original(cluster, name: str):
    """ckalab's certificate as setup kept it (None when the lab's copy is gone)."""
    kept = Path(cluster.pki_dir).parent.parent.parent / "cert-renewal.orig" / "pki" / f"{name}.crt"
    try:
        return pki.load_cert(kept.read_bytes())
    except (OSError, ValueError):
        return None


def _when(t: dt.datetime) -> str:
    return f"{t:%Y-%m-%d %H:%M} UTC"


def _started(cluster) -> dt.datetime | None:
    """When the running kube-apiserver container started, by the node's container runtime."""
    found = containers(cluster, running_only=True)
    if not found:
        return None
    created = max(int(c.get("createdAt", 0)) for c in found)
    return dt.datetime.fromtimestamp(created / 1e9, dt.timezone.utc)


@fixture
def node(cluster):
    """The cluster, when its control plane runs as static pods on a node with kubeadm."""
    if not cluster.offers("static-pods"):
        skip("needs the control plane as static pods on a real node ('ckalab up --nodes real', as root)")
    return cluster


@check(3, "the two certificates on disk are renewed (far from expiry)",
       hint=f"kubeadm certs check-expiration ({ON_NODE})")
def test_renewed_on_disk(node, lab):
    now = dt.datetime.now(dt.timezone.utc)
    for name in _names(lab):
        info = pki.describe(_cert(node, name))
        left = (info.not_after - now).days
        expect(left >= MIN_DAYS, f"{PKI}/{name}.crt is valid until {_when(info.not_after)}, {left} days from now: "
               f"it has not been renewed. {LOOK_EXPIRY}")


@check(3, "each renewed certificate keeps its CA, its key, its names and usages", after="test_renewed_on_disk",
       hint="openssl x509 -in CERT -noout -issuer -ext subjectAltName,extendedKeyUsage; openssl verify -CAfile CA CERT")
def test_renewed_identity(node, lab):
    for name in _names(lab):
        path, ca_path = f"{PKI}/{name}.crt", f"{PKI}/{CAS[name]}.crt"
        cert = _cert(node, name)
        ca = _cert(node, CAS[name])
        expect(pki.signed_by(cert, ca), f"{path} is issued by '{cert.issuer.rfc4514_string()}' and does not verify "
               f"against {ca_path}: whoever checks it with that CA refuses it. Look: openssl verify -CAfile {ca_path} "
               f"{path} ({ON_NODE}).")
        key_data = read_file(node, f"{PKI}/{name}.key")
        try:
            key = pki.load_key(key_data) if key_data is not None else None
        except (ValueError, TypeError):
            key = None
        expect(key is not None and pki.key_matches(key, cert),
               f"{path} and {PKI}/{name}.key are not a pair: the API server cannot use them. Compare: openssl x509 "
               f"-in {path} -noout -pubkey and openssl pkey -in {PKI}/{name}.key -pubout ({ON_NODE}).")
        before = _original(node, name)
        if before is None:
            continue
        now_info, was = pki.describe(cert), pki.describe(before)
        expect(cert.subject == before.subject,
               f"{path} is now for '{cert.subject.rfc4514_string()}', not '{before.subject.rfc4514_string()}' as "
               f"before. Look: openssl x509 -in {path} -noout -subject ({ON_NODE}).")
        lost = sorted(set(was.sans) - set(now_info.sans))
        expect(not lost, f"{path} lost the names {', '.join(lost)} it had before: clients that use them refuse it. "
               f"Look: openssl x509 -in {path} -noout -ext subjectAltName ({ON_NODE}).")
        expect(set(was.ext_usages) <= set(now_info.ext_usages),
               f"{path} has extended key usage {', '.join(now_info.ext_usages) or 'none'}, not "
               f"{', '.join(was.ext_usages)} as before. Look: openssl x509 -in {path} -noout -ext extendedKeyUsage "
               f"({ON_NODE}).")


def _served(cluster) -> tuple[object | None, str]:
    """(the certificate the API server presents, '') or (None, why nothing was presented)."""
    url = urlparse(admin_kubeconfig(cluster)["server"])
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # what it presents, trusted or not
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=TIMEOUT) as sock:
            with ctx.wrap_socket(sock, server_hostname=url.hostname) as tls:
                der = tls.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError) as exc:
        return None, why(exc)
    from cryptography import x509

    return x509.load_der_x509_certificate(der), ""


@check(4, "the API server presents the renewed serving certificate in a TLS handshake", after="test_renewed_on_disk",
       hint="openssl s_client -connect 127.0.0.1:PORT </dev/null | openssl x509 -noout -serial -enddate")
def test_served(node):
    server = admin_kubeconfig(node)["server"]
    served, why = _served(node)
    if served is None:
        fail(f"The API server at {server} presents no certificate ({why}).{container_state(node)} If you "
             f"have just moved its manifest, the kubelet needs about 15 s to start it again. Look: crictl ps -a "
             f"--name kube-apiserver ({ON_NODE}).")
    on_disk = _cert(node, "apiserver")
    got = pki.describe(served)
    expect(served.serial_number == on_disk.serial_number,
           f"The API server at {server} presents a certificate with serial {served.serial_number:X}, valid until "
           f"{_when(got.not_after)}, not the renewed {PKI}/apiserver.crt (serial {on_disk.serial_number:X}). "
           f"Look: openssl s_client -connect {server.removeprefix('https://')} </dev/null | openssl x509 -noout "
           f"-serial -enddate.")


@check(2, "the API server was restarted after its client certificate was renewed", after="test_renewed_on_disk",
       hint=f"crictl ps --name kube-apiserver ({ON_NODE})")
def test_restarted(node, lab):
    name = lab.params["also"]
    host_file = Path(node.pki_dir) / f"{name}.crt"
    renewed = dt.datetime.fromtimestamp(host_file.stat().st_mtime, dt.timezone.utc)
    started = _started(node)
    expect(started is not None, f"No kube-apiserver container runs on the controlplane node.{container_state(node)} "
           f"Look: crictl ps -a --name kube-apiserver ({ON_NODE}).")
    expect(started > renewed, f"The running kube-apiserver container started at {started:%H:%M:%S} UTC, before "
           f"{PKI}/{name}.crt was written at {renewed:%H:%M:%S} UTC: it still uses the client certificate it read "
           f"at its start. Look: crictl ps --name kube-apiserver (CREATED), ls -l --time-style=full-iso {PKI} "
           f"({ON_NODE}).")
