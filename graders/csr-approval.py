"""Grader for csr-approval: the user's CSR made, approved and issued; the intruder's denied."""

import base64
import binascii
import tempfile
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from ckalab import learner_files, pki
from ckalab.grading import check, expect, fail
from ckalab.kube import LAB_LABEL, Kube

CERTS = "certificates.k8s.io/v1"
SIGNER = "kubernetes.io/kube-apiserver-client"
BEFORE_SETUP = "ckalab.io/approved-before-setup"  # annotation setup puts on the intruder's request
# What the kube-apiserver-client signer accepts; "client auth" must be among them.
CLIENT_USAGES = {"client auth", "digital signature", "key encipherment"}


def _csr(kube, name):
    return kube.get(CERTS, "CertificateSigningRequest", name)


def _conditions(csr) -> dict[str, dict]:
    """Condition type -> condition, for the ones whose status is True."""
    return {c["type"]: c for c in (csr.get("status") or {}).get("conditions") or [] if c.get("status") == "True"}


def _admin_kubeconfig(cluster) -> dict:
    return yaml.safe_load(Path(cluster.kubeconfig).read_text())


def _cluster_ca(cluster) -> bytes:
    """The cluster CA (PEM) as the admin kubeconfig embeds it; the PKI file otherwise."""
    data = _admin_kubeconfig(cluster)["clusters"][0]["cluster"].get("certificate-authority-data")
    return base64.b64decode(data) if data else cluster.read_file("ca.crt")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _requested_cn(csr: dict) -> str | None:
    """The CN a CSR object asks for; None when its request does not parse."""
    try:
        return _cn(x509.load_pem_x509_csr(base64.b64decode(csr["spec"]["request"], validate=True)).subject)
    except (KeyError, TypeError, ValueError):
        return None


def _cn(name: x509.Name) -> str:
    return ", ".join(a.value for a in name.get_attributes_for_oid(NameOID.COMMON_NAME)) or "(none)"


def _spki(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _user_key(lab):
    p = lab.params
    path = lab.workdir / f"{p['user']}.key"
    try:
        # Skipping RSA's slow self-check is safe: only the public half is compared.
        raw = learner_files.read_bytes(path)
        return serialization.load_pem_private_key(raw, None, unsafe_skip_rsa_key_validation=True)
    except learner_files.LearnerFileError as exc:
        if path.exists():
            fail(str(exc))
        fail(f"{path} is missing: it is the key the request must be made from. "
             f"Run 'ckalab start csr-approval' to get a new key and CSR, then create the request again.")
    except (ValueError, TypeError):
        fail(f"{path} is not a readable PEM private key: run 'ckalab start csr-approval' after removing it.")


@check(2, "CertificateSigningRequest for the user exists", hint="kubectl get csr")
def test_csr_exists(kube, lab):
    u = lab.params["user"]
    expect(_csr(kube, u), f"CertificateSigningRequest '{u}' not found (kubectl get csr). If kubectl rejected your "
           "manifest, its message says why; the usual causes: certificates.k8s.io/v1 requires spec.signerName, and "
           "spec.request must be the whole PEM file base64-encoded on one line.")


@check(2, "request uses the client signer and usage 'client auth'", after="test_csr_exists",
       hint="kubectl get csr NAME -o yaml: look at spec.signerName and spec.usages")
def test_csr_spec(kube, lab):
    u = lab.params["user"]
    spec = _csr(kube, u)["spec"]
    recreate = (f"A request's spec cannot be changed once it is created: the request has to be made again. "
                f"Look: kubectl get csr {u} -o yaml")
    signer = spec.get("signerName")
    expect(signer == SIGNER, f"CSR '{u}' has signerName '{signer}'; a certificate for a user who talks to the "
           f"API server needs '{SIGNER}'. {recreate}")
    usages = list(spec.get("usages") or [])
    if "server auth" in usages:
        fail(f"CSR '{u}' asks for usages {usages}: 'server auth' is for serving TLS, a user's certificate needs "
             f"'client auth'. {recreate}")
    expect("client auth" in usages, f"CSR '{u}' asks for usages {usages}; expected 'client auth'. {recreate}")
    extra = [x for x in usages if x not in CLIENT_USAGES]
    expect(not extra, f"CSR '{u}' also asks for {extra}, which signer {SIGNER} refuses; expected "
           f"[client auth]. {recreate}")


@check(2, "request is the user's CSR, made from the user's key", after="test_csr_exists",
       hint="kubectl get csr NAME -o jsonpath='{.spec.request}' | base64 -d | openssl req -noout -subject")
def test_csr_request(kube, lab):
    u = lab.params["user"]
    raw = _csr(kube, u)["spec"].get("request") or ""
    try:
        req = x509.load_pem_x509_csr(base64.b64decode(raw, validate=True))
    except (binascii.Error, ValueError):
        fail(f"spec.request of CSR '{u}' does not decode to a PEM certificate request: it must be the whole "
             f"{u}.csr file, base64-encoded (newlines removed after encoding, not before). "
             f"Look: kubectl get csr {u} -o jsonpath='{{.spec.request}}' | base64 -d | head -n 1")
    cn = _cn(req.subject)
    expect(cn == u, f"The request in CSR '{u}' has CN={cn}; expected CN={u}, as in the {u}.csr of the work "
           f"directory. Look: kubectl get csr {u} -o jsonpath='{{.spec.request}}' | base64 -d | "
           "openssl req -noout -subject")
    # The colleague's request names no group; one that adds groups asks for more than the task grants.
    groups = [a.value for a in req.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    expect(not groups, f"The request in CSR '{u}' also asks for the groups (O) {', '.join(groups)}; {u}'s request "
           f"({u}.csr) asks for none, and a group in an approved certificate grants whatever is bound to it. "
           f"Look: kubectl get csr {u} -o jsonpath='{{.spec.request}}' | base64 -d | openssl req -noout -subject")
    expect(_spki(req.public_key()) == _spki(_user_key(lab).public_key()),
           f"The request in CSR '{u}' was made from a different key than {lab.workdir / (u + '.key')}: the "
           f"certificate would be useless with that key. Compare: kubectl get csr {u} -o jsonpath='{{.spec.request}}'"
           f" | base64 -d | openssl req -noout -pubkey and openssl pkey -in {u}.key -pubout")


@check(2, "request approved and certificate issued", after=("test_csr_exists", "test_csr_spec", "test_csr_request"),
       hint="kubectl get csr NAME: the CONDITION column reads Approved,Issued once it is signed")
def test_approved_issued(kube, lab):
    u = lab.params["user"]
    csr = _csr(kube, u)
    cond = _conditions(csr)
    if "Denied" in cond:
        fail(f"CSR '{u}' was denied, and a decision cannot be undone: the request has to be made again. "
             f"Look: kubectl get csr {u}")
    expect("Approved" in cond, f"CSR '{u}' is still pending: nobody has approved it yet. "
           f"Look: kubectl get csr {u} (the CONDITION column)")
    if "Failed" in cond:
        fail(f"CSR '{u}' was approved but the signer refused it: {cond['Failed'].get('message')}. "
             f"Look: kubectl get csr {u} -o yaml (status.conditions)")
    expect((csr.get("status") or {}).get("certificate"),
           f"CSR '{u}' is approved but has no certificate yet (status.certificate is empty). The controller "
           f"manager signs within seconds; check again with: kubectl get csr {u}")


@check(2, "issued certificate is CN=user, signed by the cluster CA, and logs in as the user",
       after=("test_csr_exists", "test_approved_issued"),
       hint="kubectl get csr NAME -o jsonpath='{.status.certificate}' | base64 -d | openssl x509 -noout -subject -issuer")
def test_certificate_works(kube, lab, cluster):
    u = lab.params["user"]
    pem = base64.b64decode(_csr(kube, u)["status"]["certificate"])
    cert = pki.load_cert(pem)
    expect(_cn(cert.subject) == u, f"The certificate issued for CSR '{u}' has CN={_cn(cert.subject)}; expected {u}.")
    ca = pki.load_cert(_cluster_ca(cluster))
    expect(pki.signed_by(cert, ca), f"The certificate issued for CSR '{u}' is not signed by the cluster CA "
           f"(issuer CN={_cn(cert.issuer)}).")
    key = _user_key(lab)
    # Log in for real: a throwaway kubeconfig with the issued certificate and the user's key.
    server = _admin_kubeconfig(cluster)["clusters"][0]["cluster"]["server"]
    cluster_entry = {"server": server, "certificate-authority-data": _b64(pki.cert_pem(ca))}
    user_entry = {"client-certificate-data": _b64(pem), "client-key-data": _b64(pki.key_pem(key))}
    cfg = {"apiVersion": "v1", "kind": "Config", "current-context": "c",
           "clusters": [{"name": "c", "cluster": cluster_entry}], "users": [{"name": "u", "user": user_entry}],
           "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}
    with tempfile.NamedTemporaryFile("w", suffix=".kubeconfig") as f:  # mode 0600: it holds the key
        yaml.safe_dump(cfg, f)
        f.flush()
        who = Kube(f.name, timeout=3).whoami().get("username")
    expect(who == u, f"With the issued certificate and {u}.key the API server says you are '{who}', not '{u}'.")


@check(3, "the request for the privileged group is denied",
       hint="kubectl get csr NAME -o jsonpath='{.spec.request}' | base64 -d | openssl req -noout -subject")
def test_intruder_denied(kube, lab):
    p = lab.params
    bad = p["intruder"]
    csr = _csr(kube, bad)
    expect(csr, f"CSR '{bad}' not found (kubectl get csr): it was deleted before a decision was recorded on it. "
           "'ckalab start csr-approval' brings it back, pending.")
    cond = _conditions(csr)
    if "Approved" in cond:
        fail(f"CSR '{bad}' was approved: it asks for group {p['group']}, which is bound to cluster-admin "
             f"(kubectl get clusterrolebinding -o wide), so its holder would control the whole cluster. "
             "A decision cannot be undone; 'ckalab reset csr-approval' sets the lab up again with a fresh "
             "pending request.")
    expect("Denied" in cond, f"CSR '{bad}' is still pending; look at the groups it asks for "
           f"(kubectl get csr {bad} -o jsonpath='{{.spec.request}}' | base64 -d | openssl req -noout -subject) "
           "and at what those groups may do (kubectl get clusterrolebindings -o wide).")


@check(1, "no other request approved", after="test_intruder_denied", hint="kubectl get csr")
def test_no_other_approved(kube, lab):
    p = lab.params
    # Requests approved before this lab's setup made the intruder's request (setup lists them on
    # it) are not the learner's doing: other labs, earlier attempts, auto-approved kubelet requests.
    before = (_csr(kube, p["intruder"])["metadata"].get("annotations") or {}).get(BEFORE_SETUP, "")
    earlier = set(filter(None, before.split(",")))
    others = []
    for csr in kube.list(CERTS, "CertificateSigningRequest"):
        md = csr["metadata"]
        approved = _conditions(csr).get("Approved")
        if (md["name"] in (p["user"], p["intruder"]) or md["name"] in earlier
                or LAB_LABEL in (md.get("labels") or {}) or not approved or approved.get("reason") == "AutoApproved"):
            continue
        if _requested_cn(csr) not in (p["user"], p["intruder"]):
            continue  # a request for someone else is another task's (the new-user lab's, in an exam)
        others.append(md["name"])
    expect(not others, f"You also approved {', '.join(sorted(others))}: the task asks to approve only '{p['user']}'. "
           "An approved request hands out a certificate; read each request before approving it. "
           "Look: kubectl get csr")
