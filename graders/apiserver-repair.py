"""Grader for apiserver-repair: the API server was broken by a certificate change and the learner
repairs its static pod manifest on the controlplane node.

Graded by behaviour and by the node's own files, never against a stored answer: every certificate
flag must name a file the container can see, certificates and keys must be pairs, each file must
play its role (the serving certificate chains to the CA clients trust, --client-ca-file signed the
admin's certificate, the etcd client certificate is one etcd's CA signed for a client), /readyz
must answer over verified TLS and the admin kubeconfig must work. The file checks read the node
(the manifest and the PKI), so they report while the API server is down; the behaviour checks use
short timeouts and say how to look on the node instead of hanging.
"""

from __future__ import annotations

import datetime as dt
import posixpath
import ssl

from ckalab import pki
from ckalab.controlplane import (API_SERVER as MANIFEST, ETCD as ETCD_MANIFEST, LOOK_CONTAINER, ON_NODE,
                                 StaticPod, admin_kubeconfig, container_state, get, read_file)
from ckalab.grading import check, expect, fail, fixture, skip

# Every file flag the API server needs to start and to be used with certificates.
FILE_FLAGS = ("tls-cert-file", "tls-private-key-file", "client-ca-file", "etcd-cafile", "etcd-certfile",
              "etcd-keyfile", "kubelet-client-certificate", "kubelet-client-key")
# Other file flags kubeadm sets: checked when present.
OPTIONAL_FILE_FLAGS = ("proxy-client-cert-file", "proxy-client-key-file", "requestheader-client-ca-file",
                       "service-account-key-file", "service-account-signing-key-file")
PAIRS = (("tls-cert-file", "tls-private-key-file"), ("etcd-certfile", "etcd-keyfile"),
         ("kubelet-client-certificate", "kubelet-client-key"), ("proxy-client-cert-file", "proxy-client-key-file"))


# --- the manifest's certificate files ------------------------------------------------------

class Files:
    """The manifest's flag files, read from the node once per check."""

    def __init__(self, cluster):
        self.cluster = cluster
        self.pod = StaticPod(cluster)
        self.flags = self.pod.flags

    def raw(self, flag: str) -> bytes:
        data = read_file(self.cluster, self.pod.node_path(self.flags[flag]) or "/-")
        expect(data is not None, f"--{flag}={self.flags[flag]}: no such file on the controlplane node.")
        return data

    def cert(self, flag: str):
        path = self.flags[flag]
        try:
            return pki.load_cert(self.raw(flag))
        except ValueError:
            fail(f"--{flag}={path} is not a PEM certificate. Look: openssl x509 -in {path} -noout -text ({ON_NODE}).")

    def certs(self, flag: str) -> list:
        """Every certificate of a CA bundle file."""
        from cryptography import x509

        path = self.flags[flag]
        try:
            return x509.load_pem_x509_certificates(self.raw(flag))
        except ValueError:
            fail(f"--{flag}={path} holds no PEM certificate. Look: openssl x509 -in {path} -noout -subject ({ON_NODE}).")

    def key(self, flag: str):
        path = self.flags[flag]
        try:
            return pki.load_key(self.raw(flag))
        except (ValueError, TypeError):
            fail(f"--{flag}={path} is not a PEM private key (without a passphrase). "
                 f"Look: openssl pkey -in {path} -noout -text ({ON_NODE}).")


def _cn(name) -> str:
    from cryptography.x509.oid import NameOID

    return ", ".join(a.value for a in name.get_attributes_for_oid(NameOID.COMMON_NAME)) or name.rfc4514_string()


def _chains(cert, cas: list) -> bool:
    return any(pki.signed_by(cert, ca) for ca in cas)


# --- checks -----------------------------------------------------------------------------------

@fixture
def node(cluster):
    """The cluster, when its control plane runs as static pods on a node (else nothing to repair)."""
    if not cluster.offers("static-pods"):
        skip("needs the control plane as static pods on a real node ('ckalab up --nodes real', as root)")
    return cluster


@check(1, "the API server's static pod manifest is a valid Pod", hint=f"cat {MANIFEST} ({ON_NODE})")
def test_manifest(node):
    StaticPod(node)


@check(3, "every certificate and key flag names a file the container can see",
       after="test_manifest", hint="crictl logs of the kube-apiserver container; ls -l /etc/kubernetes/pki")
def test_files_exist(node):
    cluster = node
    f = Files(cluster)
    for flag in FILE_FLAGS:
        expect(f.flags.get(flag), f"{MANIFEST} has no --{flag}: the API server needs it to "
               f"{'start' if flag != 'client-ca-file' else 'accept client certificates such as the admin kubeconfig'}. "
               f"Look: grep -- --{flag} {MANIFEST} ({ON_NODE}).")
    for flag in FILE_FLAGS + tuple(x for x in OPTIONAL_FILE_FLAGS if f.flags.get(x)):
        path = f.flags[flag]
        node_path = f.pod.node_path(path)
        expect(node_path, f"--{flag}={path} is outside every directory the static pod mounts ({f.pod.mounts()}): "
               f"the container cannot see it. Look: the volumeMounts and volumes of {MANIFEST}.")
        expect(read_file(cluster, node_path) is not None,
               f"--{flag}={path}: no such file on the controlplane node, and the API server cannot start without "
               f"it. Look: ls -l {posixpath.dirname(node_path)}, and the container's log ({LOOK_CONTAINER}; {ON_NODE}).")


@check(2, "each certificate flag and its key flag are a pair", after="test_files_exist",
       hint="openssl x509 -in CERT -noout -pubkey vs openssl pkey -in KEY -pubout")
def test_pairs_match(node):
    cluster = node
    f = Files(cluster)
    for cert_flag, key_flag in PAIRS:
        if not (f.flags.get(cert_flag) and f.flags.get(key_flag)):
            continue
        cert, key = f.cert(cert_flag), f.key(key_flag)
        c, k = f.flags[cert_flag], f.flags[key_flag]
        expect(pki.key_matches(key, cert),
               f"--{cert_flag}={c} and --{key_flag}={k} are not a pair: the certificate was issued for another "
               f"key, and the API server refuses to start with them. Compare: openssl x509 -in {c} -noout -pubkey "
               f"and openssl pkey -in {k} -pubout ({ON_NODE}).")


@check(3, "each certificate plays its role (serving, client CA, etcd client and CA)", after="test_pairs_match",
       hint="openssl x509 -in FILE -noout -subject -issuer -ext subjectAltName,extendedKeyUsage")
def test_roles(node):
    cluster = node
    from cryptography import x509
    from urllib.parse import urlparse

    f = Files(cluster)
    kc = admin_kubeconfig(cluster)
    cluster_cas = x509.load_pem_x509_certificates(kc["ca"])
    look = lambda path: f"Look: openssl x509 -in {path} -noout -subject -issuer -ext subjectAltName,extendedKeyUsage ({ON_NODE})."  # noqa: E731

    # The serving certificate: signed by the CA clients trust, for the address they use.
    path = f.flags["tls-cert-file"]
    serving = f.cert("tls-cert-file")
    expect(_chains(serving, cluster_cas),
           f"--tls-cert-file={path} is issued by '{_cn(serving.issuer)}', not by the cluster CA "
           f"'{_cn(cluster_cas[0].subject)}' that kubectl and the kubelets trust. {look(path)}")
    host = urlparse(kc["server"]).hostname
    info = pki.describe(serving)
    expect(host in info.dns_names or host in info.ip_addresses,
           f"--tls-cert-file={path} is not valid for {host}, the address clients use (its names: "
           f"{', '.join(sorted(info.sans)) or 'none'}). {look(path)}")
    now = dt.datetime.now(dt.timezone.utc)
    expect(info.not_before <= now <= info.not_after,
           f"--tls-cert-file={path} is valid from {info.not_before:%Y-%m-%d %H:%M} to {info.not_after:%Y-%m-%d %H:%M} "
           f"UTC, not now: clients refuse it. Look: openssl x509 -in {path} -noout -dates ({ON_NODE}).")
    expect(not info.ext_usages or "server auth" in info.ext_usages,
           f"--tls-cert-file={path} is not a serving certificate (extended key usage: "
           f"{', '.join(info.ext_usages)}). {look(path)}")

    # --client-ca-file: the CA that signed the admin's (and every node's) client certificate.
    path = f.flags["client-ca-file"]
    admin = pki.load_cert(kc["cert"])
    expect(_chains(admin, f.certs("client-ca-file")),
           f"--client-ca-file={path} ('{_cn(f.certs('client-ca-file')[0].subject)}') did not sign the admin "
           f"kubeconfig's client certificate (issuer '{_cn(admin.issuer)}'): the API server would refuse it. "
           f"Look: openssl x509 -in {path} -noout -subject, and the issuer of the client certificate in "
           f"/etc/kubernetes/admin.conf ({ON_NODE}).")

    # etcd: --etcd-cafile must have signed etcd's serving certificate, --etcd-certfile must be a
    # client certificate from the CA etcd trusts, and not one of etcd's own certificates.
    etcd_pod = StaticPod(cluster, ETCD_MANIFEST)
    etcd = etcd_pod.flags
    etcd_ca_file, etcd_cert_file = etcd.get("trusted-ca-file"), etcd.get("cert-file")

    def etcd_file(flag_value: str | None):
        data = read_file(cluster, etcd_pod.node_path(flag_value) or "/-") if flag_value else None
        expect(data is not None, f"etcd's manifest ({ETCD_MANIFEST}) names no readable --trusted-ca-file and "
               f"--cert-file: this lab expects etcd as ckalab set it up.")
        return x509.load_pem_x509_certificates(data)

    etcd_cas, etcd_serving = etcd_file(etcd_ca_file), etcd_file(etcd_cert_file)[0]
    path = f.flags["etcd-cafile"]
    expect(_chains(etcd_serving, f.certs("etcd-cafile")),
           f"--etcd-cafile={path} ('{_cn(f.certs('etcd-cafile')[0].subject)}') did not sign etcd's serving "
           f"certificate (issuer '{_cn(etcd_serving.issuer)}'): the API server cannot trust etcd. "
           f"Look: openssl x509 -in {path} -noout -subject, and etcd's --cert-file in {ETCD_MANIFEST}.")
    path = f.flags["etcd-certfile"]
    client = f.cert("etcd-certfile")
    expect(_chains(client, etcd_cas),
           f"--etcd-certfile={path} is issued by '{_cn(client.issuer)}', not by the CA etcd trusts for clients "
           f"(its --trusted-ca-file, '{_cn(etcd_cas[0].subject)}'): etcd refuses it. {look(path)}")
    own = {c.fingerprint(c.signature_hash_algorithm) for c in [etcd_serving] if c.signature_hash_algorithm}
    peer = etcd.get("peer-cert-file")
    if peer:
        own |= {c.fingerprint(c.signature_hash_algorithm) for c in etcd_file(peer)[:1] if c.signature_hash_algorithm}
    expect(client.signature_hash_algorithm is None or client.fingerprint(client.signature_hash_algorithm) not in own,
           f"--etcd-certfile={path} is etcd's own certificate ('{_cn(client.subject)}'), not a client certificate "
           f"issued to the API server. {look(path)}")
    usages = pki.describe(client).ext_usages
    expect(not usages or "client auth" in usages,
           f"--etcd-certfile={path} is not a client certificate (extended key usage: {', '.join(usages)}). {look(path)}")


@check(3, "the API server answers /readyz, with a certificate that verifies against the cluster CA",
       hint="crictl ps -a --name kube-apiserver; crictl logs CONTAINER-ID (on the node)")
def test_readyz(node):
    cluster = node
    server = admin_kubeconfig(cluster)["server"]
    try:
        status, body = get(cluster, "/readyz")
    except ssl.SSLCertVerificationError as exc:
        fail(f"The API server at {server} answers, but its serving certificate does not verify against the cluster "
             f"CA ({exc.verify_message}): kubectl refuses it. Look: openssl s_client -connect "
             f"{server.removeprefix('https://')} -CAfile /etc/kubernetes/pki/ca.crt </dev/null.")
    if status is None:
        fail(f"The API server at {server} does not answer ({body}).{container_state(cluster)} If you have just "
             f"changed the manifest, the kubelet needs about 15 s to start it again. Look: {LOOK_CONTAINER} "
             f"({ON_NODE}).")
    expect(status == 200, f"The API server at {server} answers /readyz with {status}: {body.strip()[:300]}. "
           f"Look: kubectl get --raw '/readyz?verbose'.")


@check(3, "kubectl works with the admin kubeconfig", after="test_readyz",
       hint="kubectl get nodes; kubectl auth whoami")
def test_kubectl_works(node):
    cluster = node
    status, body = get(cluster, "/api/v1/namespaces/kube-system", client_cert=True)
    expect(status is not None, f"The API server stopped answering ({body}). Look: {LOOK_CONTAINER} ({ON_NODE}).")
    if status == 401:
        fail("The API server does not accept the admin kubeconfig's client certificate (401 Unauthorized): it checks "
             "client certificates against its --client-ca-file. Look: kubectl get nodes, and openssl x509 -noout "
             "-issuer of the admin certificate against that file's subject.")
    expect(status == 200, f"kubectl get namespace kube-system with the admin kubeconfig gets {status}: "
           f"{body.strip()[:300]}. Look: kubectl auth whoami; kubectl get namespace kube-system.")
