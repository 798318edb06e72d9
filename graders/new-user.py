"""Grader for new-user: the exam's whole chain for one user, judged by what the cluster does.

Key and CSR object, approval, a kubeconfig that really logs in with the certificate the cluster
issued, and a Role + RoleBinding whose effect is confirmed by real requests made as the user
(through the learner's own kubeconfig) and by the user's effective rules (nothing more).
"""

import base64
import binascii
from pathlib import Path

import urllib3
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from kubernetes.client.rest import ApiException

from ckalab import learner_files, pki
from ckalab.grading import check, expect, fail
from ckalab.kube import Kube, api_error_text
from ckalab.rbac import Allowed, Subject, extra_rights, grants, misnamed_resources, missing_verbs

CERTS = "certificates.k8s.io/v1"
RBAC = "rbac.authorization.k8s.io/v1"
SIGNER = "kubernetes.io/kube-apiserver-client"
# What the task grants: (API group, resource, verbs). The request each right is proven with is below.
RIGHTS = (("", "pods", ("get", "list", "watch")),
          ("apps", "deployments", ("get", "list", "create", "update", "delete")))
BASELINE_GROUPS = {"system:authenticated"}  # every certificate user is in it; anything else came from O=


def _named(lab, suffix: str) -> Path:
    return lab.workdir / f"{lab.params['user']}{suffix}"


def _cn(name: x509.Name) -> str:
    return ", ".join(a.value for a in name.get_attributes_for_oid(NameOID.COMMON_NAME)) or "(none)"


def _spki(public_key) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _key(lab):
    path = _named(lab, ".key")
    if not path.exists():
        fail(f"{path.name} not found in {lab.workdir}: the user's private key goes there. Look: ls {lab.workdir}")
    try:
        raw = learner_files.read_bytes(path)
        # Skipping RSA's slow self-check is safe: only the public half is compared.
        return serialization.load_pem_private_key(raw, None, unsafe_skip_rsa_key_validation=True)
    except learner_files.LearnerFileError as exc:
        fail(str(exc))
    except (ValueError, TypeError):
        fail(f"{path.name} is not an unencrypted PEM private key. Look: openssl pkey -in {path.name} -noout -text")


def _csr(kube, lab) -> dict | None:
    return kube.get(CERTS, "CertificateSigningRequest", lab.params["user"])


def _issued(kube, lab) -> bytes | None:
    """The PEM certificate the cluster issued for the user's CSR, if any."""
    cert = ((_csr(kube, lab) or {}).get("status") or {}).get("certificate")
    return base64.b64decode(cert) if cert else None


def _true_conditions(csr: dict) -> dict[str, dict]:
    return {c["type"]: c for c in (csr.get("status") or {}).get("conditions") or [] if c.get("status") == "True"}


@check(1, "the user's private key exists", hint="ls the work directory; openssl pkey -in FILE -noout")
def test_key(lab):
    _key(lab)


@check(3, "CertificateSigningRequest for the user: signer, usage, subject and key", after="test_key",
       hint="kubectl get csr NAME -o yaml; decode spec.request and read it with openssl req -noout -subject")
def test_csr(kube, lab):
    u = lab.params["user"]
    csr = _csr(kube, lab)
    expect(csr, f"CertificateSigningRequest '{u}' not found (kubectl get csr). If kubectl rejected your manifest, "
           "its message says why.")
    spec = csr.get("spec") or {}
    again = f"A request cannot be changed once created: it has to be made again. Look: kubectl get csr {u} -o yaml"
    expect(spec.get("signerName") == SIGNER, f"CSR '{u}' has signerName '{spec.get('signerName')}'; a user's "
           f"client certificate for the API server needs '{SIGNER}'. {again}")
    usages = list(spec.get("usages") or [])
    expect("client auth" in usages and "server auth" not in usages,
           f"CSR '{u}' asks for usages {usages}; a user's certificate needs 'client auth' (and no 'server auth', "
           f"which is for serving TLS). {again}")
    try:
        req = x509.load_pem_x509_csr(base64.b64decode(spec.get("request") or "", validate=True))
    except (binascii.Error, ValueError):
        fail(f"spec.request of CSR '{u}' does not decode to a PEM certificate request: it must be the whole CSR "
             f"file base64-encoded, newlines removed after encoding. Look: kubectl get csr {u} "
             "-o jsonpath='{.spec.request}' | base64 -d | head -n 1")
    look = f"Look: kubectl get csr {u} -o jsonpath='{{.spec.request}}' | base64 -d | openssl req -noout -subject"
    expect(_cn(req.subject) == u, f"The request in CSR '{u}' has CN={_cn(req.subject)}; the API server takes the "
           f"user name from CN, so it must be CN={u}. {look}")
    groups = [a.value for a in req.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    expect(not groups, f"The request in CSR '{u}' also asks for the groups (O) {', '.join(groups)}; the task gives "
           f"{u} no group, and a group grants whatever is bound to it. {look}")
    expect(_spki(req.public_key()) == _spki(_key(lab).public_key()),
           f"The request in CSR '{u}' was made from another key than {u}.key: the issued certificate would not work "
           f"with {u}.key. Compare: kubectl get csr {u} -o jsonpath='{{.spec.request}}' | base64 -d | "
           f"openssl req -noout -pubkey and openssl pkey -in {u}.key -pubout")


@check(2, "the request is approved and the certificate issued", after="test_csr",
       hint="kubectl get csr NAME: CONDITION reads Approved,Issued once it is signed")
def test_approved(kube, lab):
    u = lab.params["user"]
    csr = _csr(kube, lab)
    cond = _true_conditions(csr)
    expect("Denied" not in cond, f"CSR '{u}' was denied; a decision cannot be undone, the request has to be made "
           f"again. Look: kubectl get csr {u}")
    expect("Approved" in cond, f"CSR '{u}' is still pending: nobody has approved it. Look: kubectl get csr {u}")
    expect("Failed" not in cond, f"CSR '{u}' was approved but the signer refused it: "
           f"{(cond.get('Failed') or {}).get('message')}. Look: kubectl get csr {u} -o yaml")
    expect(_issued(kube, lab), f"CSR '{u}' is approved but status.certificate is still empty; the controller "
           f"manager signs within seconds. Look again: kubectl get csr {u}")


def _kubeconfig(lab) -> dict:
    path = _named(lab, ".kubeconfig")
    if not path.exists():
        fail(f"{path.name} not found in {lab.workdir}: the user's kubeconfig goes there, under that name. "
             f"Look: ls {lab.workdir}")
    try:
        cfg = learner_files.load_yaml(path)
    except learner_files.LearnerFileError as exc:
        fail(f"{exc} Look: kubectl config view --kubeconfig={path.name}")
    expect(isinstance(cfg, dict) and cfg.get("kind") in (None, "Config"),
           f"{path.name} does not hold a kubeconfig (a mapping of kind Config with clusters, users and contexts). "
           f"Look: kubectl config view --kubeconfig={path.name}")
    return cfg


def _entry(cfg: dict, section: str, name) -> dict | None:
    """The body of the entry called `name` in clusters/users/contexts, or None."""
    for item in cfg.get(section) if isinstance(cfg.get(section), list) else []:
        if isinstance(item, dict) and item.get("name") == name:
            body = item.get(section[:-1])
            return body if isinstance(body, dict) else {}
    return None


@check(2, "kubeconfig: cluster, user and context entries, current context", hint="kubectl config view --kubeconfig=FILE")
def test_kubeconfig(lab):
    u, ns = lab.params["user"], lab.params["namespace"]
    name = _named(lab, ".kubeconfig").name
    cfg = _kubeconfig(lab)
    look = f"Look: kubectl config get-contexts --kubeconfig={name}"
    ctx = _entry(cfg, "contexts", u)
    expect(ctx is not None, f"{name} has no context named '{u}'. {look}")
    expect(ctx.get("user") == u, f"Context '{u}' in {name} uses the user entry '{ctx.get('user') or '(none)'}'; "
           f"expected '{u}'. {look}")
    expect(ctx.get("namespace") == ns, f"Context '{u}' in {name} has namespace '{ctx.get('namespace') or '(not set)'}'"
           f"; expected '{ns}'. {look}")
    cluster = _entry(cfg, "clusters", ctx.get("cluster"))
    expect(cluster is not None, f"Context '{u}' in {name} names the cluster entry '{ctx.get('cluster') or '(none)'}', "
           f"which {name} does not have. Look: kubectl config view --kubeconfig={name}")
    expect(str(cluster.get("server") or "").startswith("https://"),
           f"The cluster entry '{ctx['cluster']}' in {name} has server '{cluster.get('server') or ''}'; expected the "
           "API server's https:// URL (the admin kubeconfig has it).")
    expect(not cluster.get("insecure-skip-tls-verify") and
           (cluster.get("certificate-authority") or cluster.get("certificate-authority-data")),
           f"The cluster entry '{ctx['cluster']}' in {name} does not trust the cluster through its CA certificate "
           f"(certificate-authority or certificate-authority-data, no insecure-skip-tls-verify). "
           f"Look: kubectl config view --kubeconfig={name}")
    user = _entry(cfg, "users", u)
    expect(user is not None, f"{name} has no user entry named '{u}'. Look: kubectl config view --kubeconfig={name}")
    has = {k for k in ("client-certificate", "client-key") if user.get(k) or user.get(f"{k}-data")}
    expect(has == {"client-certificate", "client-key"}, f"The user entry '{u}' in {name} needs both a client "
           f"certificate and its key (client-certificate[-data], client-key[-data]). "
           f"Look: kubectl config view --kubeconfig={name}")
    current = cfg.get("current-context")
    expect(current == u, f"current-context in {name} is '{current or ''}'; expected '{u}'. "
           f"Look: kubectl config current-context --kubeconfig={name}")


def _login(lab) -> Kube:
    """A client made from the learner's file alone, as kubectl --kubeconfig FILE would use it."""
    try:
        return Kube(_named(lab, ".kubeconfig"), timeout=3)
    except Exception as exc:
        from kubernetes.config import ConfigException  # loaded by then: only its loader raises it

        if not isinstance(exc, ConfigException):
            raise
        fail(f"The Kubernetes client cannot load {_named(lab, '.kubeconfig').name}: {exc}")


def _unreachable(lab, exc: Exception) -> str:
    name = _named(lab, ".kubeconfig").name
    if isinstance(exc, ApiException) and exc.status == 401:
        return (f"The API server refused the client certificate in {name} (401 Unauthorized): it must be a "
                f"certificate the cluster CA signed, with its own key. Look: kubectl config view --raw "
                f"--kubeconfig={name}, then openssl x509 -noout -subject -issuer -dates on the certificate")
    text = str(getattr(exc, "reason", None) or exc)
    if "KEY_VALUES_MISMATCH" in text:
        return (f"In {name}, the client key does not belong to the client certificate of the user entry: TLS "
                f"refuses the pair. Compare: openssl x509 -noout -pubkey -in CERT and openssl pkey -pubout -in KEY")
    if "CERTIFICATE_VERIFY_FAILED" in text or "SSL" in text:
        return (f"TLS with the API server failed using {name} ({text[:160]}): the cluster entry must trust the "
                f"cluster CA and name the lab's API server. Look: kubectl config view --raw --kubeconfig={name}")
    return f"Cannot reach the API server with {name} ({text[:160]}). Look: kubectl --kubeconfig={name} auth whoami"


@check(3, "the kubeconfig logs in as the user with the issued certificate", after=("test_approved", "test_kubeconfig"),
       hint="kubectl --kubeconfig=FILE auth whoami")
def test_login(kube, lab):
    u = lab.params["user"]
    name = _named(lab, ".kubeconfig").name
    client = _login(lab)
    try:
        who = client.whoami()
    except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
        fail(_unreachable(lab, exc))
    groups = set(who.get("groups") or [])
    expect(who.get("username") == u, f"{name} logs in as '{who.get('username')}', not as '{u}': its user entry "
           f"must carry {u}'s certificate and key. Look: kubectl --kubeconfig={name} auth whoami")
    expect(groups <= BASELINE_GROUPS, f"{name} logs in as '{u}' in the groups {', '.join(sorted(groups - BASELINE_GROUPS))}"
           f": the certificate asks for groups the task does not give. Look: kubectl --kubeconfig={name} auth whoami")
    # The certificate the client presents is what the TLS layer was given: the file on disk.
    presented = pki.load_cert(Path(client.configuration.cert_file).read_bytes())
    issued = pki.load_cert(_issued(kube, lab))
    expect(presented == issued, f"{name} logs in with a certificate (serial {presented.serial_number:x}) that is not "
           f"the one the cluster issued for CSR '{u}' (serial {issued.serial_number:x}): the task is to use the "
           f"certificate from the Certificates API. Look: kubectl get csr {u} -o jsonpath='{{.status.certificate}}'"
           " | base64 -d | openssl x509 -noout -serial")


def _role(kube, lab) -> dict | None:
    return kube.get(RBAC, "Role", lab.params["role"], lab.params["namespace"])


@check(3, "Role allows the pod and deployment verbs", hint="kubectl describe role NAME -n NAMESPACE")
def test_role(kube, lab):
    p = lab.params
    role = _role(kube, lab)
    expect(role, f"Role '{p['role']}' not found in namespace '{p['namespace']}' (kubectl get roles -n {p['namespace']}).")
    rules = role.get("rules") or []
    odd = misnamed_resources(rules, ("pod", "po", "deployment", "deploy"))
    expect(not odd, f"Role '{p['role']}' names resources {odd}: RBAC matches lowercase plurals only "
           f"(kubectl api-resources shows them).")
    for group, resource, verbs in RIGHTS:
        missing = missing_verbs(rules, resource, verbs, group)
        if missing and group and not missing_verbs(rules, resource, missing, ""):
            fail(f"Role '{p['role']}' grants {resource} in the core API group \"\", where there are none: "
                 f"{resource} are served by the API group '{group}'. Look: kubectl api-resources | grep {resource}")
        expect(not missing, f"Role '{p['role']}' does not allow {', '.join(missing)} on {resource} "
               f"(API group \"{group}\"). Expected: {', '.join(verbs)}. "
               f"Look: kubectl describe role {p['role']} -n {p['namespace']}")


@check(2, "RoleBinding grants the Role to the user", hint="kubectl describe rolebinding NAME -n NAMESPACE")
def test_binding(kube, lab):
    p = lab.params
    rb = kube.get(RBAC, "RoleBinding", p["binding"], p["namespace"])
    expect(rb, f"RoleBinding '{p['binding']}' not found in namespace '{p['namespace']}' "
           f"(kubectl get rolebindings -n {p['namespace']}).")
    ref = rb.get("roleRef") or {}
    expect(ref.get("kind") == "Role" and ref.get("name") == p["role"],
           f"RoleBinding '{p['binding']}' refers to {ref.get('kind')} '{ref.get('name')}'; expected Role '{p['role']}'.")
    subjects = rb.get("subjects") or []
    found = ", ".join(f"{s.get('kind')} '{s.get('name')}'" for s in subjects) or "no subjects"
    expect(any(s.get("kind") == "User" and s.get("name") == p["user"] for s in subjects),
           f"RoleBinding '{p['binding']}' binds {found}; expected the User '{p['user']}' (kind: User: a certificate's "
           "CN is a user name, not a Group or ServiceAccount).")


@check(2, "as the user: the pod and deployment requests succeed", after=("test_login", "test_binding"),
       hint="kubectl --kubeconfig=FILE get pods,deployments; kubectl auth can-i VERB RESOURCE --as USER -n NAMESPACE")
def test_user_can(kube, lab):
    p = lab.params
    u, ns = p["user"], p["namespace"]
    client = _login(lab)
    # Real requests through the learner's kubeconfig; a create is sent as a dry run (authorized
    # exactly like a real one, but nothing is stored).
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "ckalab-dry-run"},
                  "spec": {"selector": {"matchLabels": {"app": "x"}}, "template": {
                      "metadata": {"labels": {"app": "x"}}, "spec": {"containers": [{"name": "x", "image": "nginx"}]}}}}
    for what, method, path, body in (
            ("list pods", "GET", f"/api/v1/namespaces/{ns}/pods", None),
            ("list deployments", "GET", f"/apis/apps/v1/namespaces/{ns}/deployments", None),
            ("create deployments", "POST", f"/apis/apps/v1/namespaces/{ns}/deployments", deployment)):
        try:
            client.request(method, path, {"dryRun": "All"} if body else None, body)
        except ApiException as exc:
            fail(f"As '{u}' (with {u}.kubeconfig), {what} in '{ns}' was refused ({exc.status}): "
                 f"{api_error_text(exc)}. Look: kubectl auth can-i {what} --as {u} -n {ns}")
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            fail(_unreachable(lab, exc))
    denied = [f"{v} {res}" for group, res, verbs in RIGHTS for v in verbs if not kube.can(u, v, res, ns, group=group)]
    expect(not denied, f"SubjectAccessReview: '{u}' cannot {', '.join(denied)} in '{ns}'. "
           f"Look: kubectl auth can-i --list --as {u} -n {ns}")


@check(2, "the user gets nothing more", after="test_binding", hint="kubectl auth can-i --list --as USER -n NAMESPACE")
def test_nothing_more(kube, lab):
    """Judged from every rule the user's bindings grant (ckalab.rbac), not from sampled requests."""
    p = lab.params
    allowed = [Allowed(res, verbs, group=group, namespace=p["namespace"]) for group, res, verbs in RIGHTS]
    extra = extra_rights(grants(kube, Subject(p["user"])), allowed, kube)
    expect(not extra, f"'{p['user']}' gets more than the task asks for:\n" + "\n".join(f"- {e}" for e in extra)
           + f"\nLook: kubectl auth can-i --list --as {p['user']} -n {p['namespace']}")
