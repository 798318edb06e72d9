"""The local backend's PKI, in kubeadm's layout, names, subjects and usages.

Learners inspect it exactly as they would /etc/kubernetes/pki on a kubeadm control plane:
the tree lives at <cluster>/etc/kubernetes/{pki,*.conf}. Existing files are kept (as
`kubeadm init phase certs` does), so `up` after `down` reuses the same identities.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from ... import home

# kubeadm >= 1.29 gives admin.conf the group kubeadm:cluster-admins (bound to cluster-admin
# by a ClusterRoleBinding) and keeps system:masters for super-admin.conf only.
ADMINS_GROUP = "kubeadm:cluster-admins"
SERVICE_CIDR = "10.96.0.0/12"  # kubeadm's default service subnet
SERVICE_IP = "10.96.0.1"  # its first address: the `kubernetes` Service, hence a SAN
CLUSTER_NAME = "kubernetes"


def _pki():
    """ckalab.pki, loaded on first use: it imports `cryptography` (30-45 ms), and a cold check
    reaches this module (through the local backend) without making or reading a certificate."""
    from ... import pki

    return pki


def __getattr__(name: str):
    # `kpki.pki` keeps working for callers that load the CA themselves.
    if name == "pki":
        return _pki()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _write_pair(d: Path, base: str, key, cert) -> None:
    """base.key is created 0600 (never readable by others, not even for a moment), then base.crt:
    a crash in between leaves no certificate without its key."""
    pki = _pki()
    home.write_atomic(d / f"{base}.key", pki.key_pem(key), private=True)
    home.write_atomic(d / f"{base}.crt", pki.cert_pem(cert))


def _load_or_make_ca(d: Path, base: str, cn: str):
    pki = _pki()
    if (d / f"{base}.crt").exists() and (d / f"{base}.key").exists():
        return pki.load_key(d / f"{base}.key", own=True), pki.load_cert(d / f"{base}.crt")
    key, cert = pki.make_ca(cn)
    _write_pair(d, base, key, cert)
    return key, cert


def _leaf(d: Path, base: str, ca, cn: str, **kw) -> None:
    pki = _pki()
    if (d / f"{base}.crt").exists() and (d / f"{base}.key").exists():
        return
    key, cert = pki.sign(ca[0], ca[1], cn, **kw)
    _write_pair(d, base, key, cert)


def generate(etc: Path, node: str, advertise_ip: str) -> Path:
    """Create etc/kubernetes/pki (and etcd/) as kubeadm does; return the pki dir."""
    pki = _pki()
    d = etc / "pki"
    e = d / "etcd"
    d.mkdir(parents=True, exist_ok=True)
    e.mkdir(parents=True, exist_ok=True)
    SERVER_AUTH, CLIENT_AUTH = pki.SERVER_AUTH, pki.CLIENT_AUTH

    ca = _load_or_make_ca(d, "ca", "kubernetes")
    _leaf(d, "apiserver", ca, "kube-apiserver", usages=(SERVER_AUTH,),
          dns=(node, "kubernetes", "kubernetes.default", "kubernetes.default.svc",
               "kubernetes.default.svc.cluster.local"),
          ips=(SERVICE_IP, advertise_ip))
    _leaf(d, "apiserver-kubelet-client", ca, "kube-apiserver-kubelet-client", orgs=(ADMINS_GROUP,))

    fca = _load_or_make_ca(d, "front-proxy-ca", "front-proxy-ca")
    _leaf(d, "front-proxy-client", fca, "front-proxy-client")

    eca = _load_or_make_ca(e, "ca", "etcd-ca")
    etcd_names = dict(dns=(node, "localhost"), ips=(advertise_ip, "127.0.0.1", "::1"))
    _leaf(e, "server", eca, node, usages=(SERVER_AUTH, CLIENT_AUTH), **etcd_names)
    _leaf(e, "peer", eca, node, usages=(SERVER_AUTH, CLIENT_AUTH), **etcd_names)
    _leaf(e, "healthcheck-client", eca, "kube-etcd-healthcheck-client")
    _leaf(d, "apiserver-etcd-client", eca, "kube-apiserver-etcd-client")

    if not (d / "sa.key").exists():
        key = pki.new_key()
        home.write_atomic(d / "sa.key", pki.key_pem(key), private=True)
        home.write_atomic(d / "sa.pub", pki.public_pem(key))
    return d


# kubeconfig file -> (user name in the file, CN, groups), as kubeadm writes them.
KUBECONFIGS = {
    "admin.conf": ("kubernetes-admin", "kubernetes-admin", (ADMINS_GROUP,)),
    "super-admin.conf": ("kubernetes-super-admin", "kubernetes-super-admin", ("system:masters",)),
    "controller-manager.conf": ("system:kube-controller-manager", "system:kube-controller-manager", ()),
    "scheduler.conf": ("system:kube-scheduler", "system:kube-scheduler", ()),
}


def kubeconfig_dict(server: str, ca_pem: bytes, user: str, cert_pem: bytes, key_pem: bytes,
                    cluster: str = CLUSTER_NAME) -> dict:
    import base64

    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    context = f"{user}@{cluster}"
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)}}],
        "users": [{"name": user, "user": {"client-certificate-data": b64(cert_pem), "client-key-data": b64(key_pem)}}],
        "contexts": [{"name": context, "context": {"cluster": cluster, "user": user}}],
        "current-context": context,
        "preferences": {},
    }


def write_kubeconfig(path: Path, server: str, ca, user: str, cn: str, orgs=()) -> None:
    """Write a kubeconfig with embedded credentials; an existing one only gets its server updated."""
    pki = _pki()
    if path.exists():
        data = yaml.safe_load(path.read_text())
        for c in data.get("clusters", []):
            c["cluster"]["server"] = server
    else:
        key, cert = pki.sign(ca[0], ca[1], cn, orgs=orgs)
        data = kubeconfig_dict(server, pki.cert_pem(ca[1]), user, pki.cert_pem(cert), pki.key_pem(key))
    home.write_atomic(path, yaml.safe_dump(data, sort_keys=False), private=True)


def write_kubeconfigs(etc: Path, server: str, extra: dict[str, tuple[str, str, tuple]] | None = None) -> None:
    pki = _pki()
    d = etc / "pki"
    ca = (pki.load_key(d / "ca.key", own=True), pki.load_cert(d / "ca.crt"))
    for fname, (user, cn, orgs) in {**KUBECONFIGS, **(extra or {})}.items():
        write_kubeconfig(etc / fname, server, ca, user, cn, orgs)
