"""Grader for kubeconfig: the learner's file has the right parts, and really logs in as the user."""

import base64
import binascii
import ssl
from pathlib import Path

import urllib3
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from kubernetes.client.rest import ApiException

from ckalab import learner_files, pki
from ckalab.grading import check, expect, fail
from ckalab.kube import Kube, api_error_text


def _path(lab) -> Path:
    return lab.workdir / f"{lab.params['user']}.kubeconfig"


def _config(lab) -> dict:
    """The parsed file; every way it can be unreadable becomes a learner-facing failure."""
    path, name = _path(lab), _path(lab).name
    if not path.exists():
        fail(f"{name} not found in {lab.workdir}: the kubeconfig file goes there, under that name. "
             f"Look: ls {lab.workdir}")
    try:
        raw = learner_files.read_bytes(path, name=name)
    except learner_files.LearnerFileError as exc:
        fail(str(exc))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or "\0" in text:
        fail(f"{name} is not a text file: a kubeconfig is YAML. Look at it with: cat {name}")
    try:
        cfg = learner_files.parse_yaml(text, name)
    except learner_files.LearnerFileError as exc:
        fail(str(exc))
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        fail(f"{name} is not valid YAML{at}: {getattr(exc, 'problem', None) or exc}. "
             f"kubectl config view --kubeconfig={name} shows what kubectl makes of it.")
    if not isinstance(cfg, dict):
        fail(f"{name} does not hold a kubeconfig: expected a mapping with clusters, users and contexts, "
             f"found {type(cfg).__name__ if cfg is not None else 'an empty document'}.")
    kind = cfg.get("kind")
    expect(kind in (None, "Config"), f"{name} has kind: {kind}; a kubeconfig has kind: Config.")
    return cfg


def _items(cfg: dict, section: str) -> list:
    items = cfg.get(section)
    return items if isinstance(items, list) else []


def _entry(cfg: dict, section: str, name: str) -> dict | None:
    """The body of the named entry in clusters/users/contexts ({name, cluster: {...}} -> {...})."""
    body_key = section[:-1]
    for item in _items(cfg, section):
        if isinstance(item, dict) and item.get("name") == name:
            body = item.get(body_key)
            return body if isinstance(body, dict) else {}
    return None


def _names(cfg: dict, section: str) -> str:
    found = [str(i.get("name")) for i in _items(cfg, section) if isinstance(i, dict)]
    return ", ".join(found) or "none"


def _material(lab, body: dict, key: str, what: str, entry: str) -> bytes:
    """PEM bytes from `key-data` (base64) or `key` (a path; relative to the file's dir, as kubectl does)."""
    name = _path(lab).name
    if body.get(f"{key}-data"):
        try:
            return base64.b64decode(str(body[f"{key}-data"]), validate=True)
        except (binascii.Error, ValueError):
            fail(f"{key}-data of {entry} in {name} is not valid base64: a -data field holds the whole PEM file, "
                 f"base64-encoded on one line. Look: kubectl config view --raw --kubeconfig={name}")
    if body.get(key):
        p = Path(str(body[key]))  # like kubectl: no ~ expansion
        p = p if p.is_absolute() else _path(lab).parent / p
        try:
            return learner_files.read_bytes(p, name=f"{key} of {entry} in {name} ({body[key]})")
        except learner_files.LearnerFileError as exc:
            fail(f"{exc} Relative paths count from the kubeconfig's directory; the {what} is in {lab.workdir}.")
    fail(f"{entry} in {name} has neither {key} nor {key}-data: it needs the {what}.")


def _cn(cert) -> str:
    return ", ".join(a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)) or "(none)"


def _cluster_ca(cluster) -> x509.Certificate:
    data = yaml.safe_load(Path(cluster.kubeconfig).read_text())["clusters"][0]["cluster"].get(
        "certificate-authority-data")
    return pki.load_cert(base64.b64decode(data) if data else cluster.read_file("ca.crt"))


def _admin_server(cluster) -> str:
    return yaml.safe_load(Path(cluster.kubeconfig).read_text())["clusters"][0]["cluster"]["server"]


@check(2, "the kubeconfig file exists and parses", hint="kubectl config view --kubeconfig=FILE")
def test_file_parses(lab):
    _config(lab)


@check(2, "cluster entry: server and CA", after="test_file_parses",
       hint="kubectl config view --kubeconfig=FILE (clusters: server, certificate-authority)")
def test_cluster_entry(lab):
    p, name = lab.params, _path(lab).name
    cfg = _config(lab)
    body = _entry(cfg, "clusters", p["cluster"])
    expect(body is not None, f"{name} has no cluster named '{p['cluster']}' (clusters: {_names(cfg, 'clusters')}).")
    entry = f"cluster '{p['cluster']}'"
    server = str(body.get("server") or "")
    expect(server.startswith("https://"), f"{entry} in {name} has server '{server}'; expected the API server's "
           "https:// URL (kubectl config view --minify on the admin kubeconfig shows it).")
    expect(not body.get("insecure-skip-tls-verify"), f"{entry} in {name} sets insecure-skip-tls-verify: the "
           "client would trust any server, including an impostor; the task asks to trust the cluster through "
           f"ca.crt. Look: kubectl config view --kubeconfig={name}")
    pem = _material(lab, body, "certificate-authority", "CA certificate ca.crt", entry)
    try:
        pki.load_cert(pem)
    except ValueError:
        fail(f"The certificate-authority of {entry} in {name} is not a certificate; expected the CA certificate "
             f"ca.crt. Look: kubectl config view --raw --kubeconfig={name}")


@check(2, "user entry: client certificate and key", after="test_file_parses",
       hint="kubectl config view --kubeconfig=FILE (users: client-certificate, client-key)")
def test_user_entry(lab):
    p, name = lab.params, _path(lab).name
    cfg = _config(lab)
    body = _entry(cfg, "users", p["user"])
    expect(body is not None, f"{name} has no user named '{p['user']}' (users: {_names(cfg, 'users')}).")
    entry = f"user '{p['user']}'"
    other = [k for k in ("exec", "auth-provider", "token", "tokenFile", "username") if body.get(k)]
    expect(not other, f"{entry} in {name} uses {', '.join(other)}; this task's user logs in with a client "
           f"certificate and key only. Look: kubectl config view --kubeconfig={name}")
    cert_pem = _material(lab, body, "client-certificate", f"certificate {p['user']}.crt", entry)
    key_pem = _material(lab, body, "client-key", f"key {p['user']}.key", entry)
    try:
        cert = pki.load_cert(cert_pem)
    except ValueError:
        fail(f"The client-certificate of {entry} in {name} is not a certificate; expected {p['user']}.crt. "
             f"Look: kubectl config view --raw --kubeconfig={name}")
    try:
        # Skipping RSA's slow self-check is safe: the key is only compared with the certificate.
        key = serialization.load_pem_private_key(key_pem, None, unsafe_skip_rsa_key_validation=True)
    except (ValueError, TypeError):
        fail(f"The client-key of {entry} in {name} is not an unencrypted PEM private key; expected "
             f"{p['user']}.key. Look: kubectl config view --raw --kubeconfig={name}")
    expect(pki.key_matches(key, cert), f"In {entry} of {name}, the client-key does not belong to the "
           f"client-certificate (CN={_cn(cert)}); expected {p['user']}.crt with {p['user']}.key. "
           f"Look: kubectl config view --kubeconfig={name}")


@check(2, "context with namespace, and current-context", after="test_file_parses",
       hint="kubectl config get-contexts --kubeconfig=FILE (the * marks the current one)")
def test_context(lab):
    p, name = lab.params, _path(lab).name
    ctx_name = f"{p['user']}@{p['cluster']}"
    cfg = _config(lab)
    body = _entry(cfg, "contexts", ctx_name)
    expect(body is not None, f"{name} has no context named '{ctx_name}' (contexts: {_names(cfg, 'contexts')}).")
    for field, want in (("cluster", p["cluster"]), ("user", p["user"]), ("namespace", p["namespace"])):
        got = body.get(field)
        expect(got == want, f"Context '{ctx_name}' in {name} has {field}: {got or '(not set)'}; expected {want}. "
               f"Look: kubectl config get-contexts --kubeconfig={name}")
    current = cfg.get("current-context")
    expect(current == ctx_name, f"current-context in {name} is '{current or ''}'; expected '{ctx_name}'. "
           f"Look: kubectl config current-context --kubeconfig={name}")


def _connect_error(lab, cluster, exc: Exception, server: str) -> str:
    """A learner-facing explanation of why the file could not log in."""
    name = _path(lab).name
    reason = getattr(exc, "reason", None)
    text = f"{reason or exc}"
    if isinstance(exc, ApiException):
        if exc.status == 401:
            return (f"The API server at {server} rejected the client certificate in {name} (401 Unauthorized): "
                    "the certificate must be signed by the cluster CA.")
        return f"The API server answered {exc.status} ({exc.reason}): {api_error_text(exc)}"
    if isinstance(reason, ssl.SSLError) or "CERTIFICATE_VERIFY_FAILED" in text or "SSL" in text:
        if "hostname" in text.lower() or "IP address mismatch" in text:
            return (f"{server} does not match the names in the API server's certificate ({text}); the lab's "
                    f"API server is {_admin_server(cluster)}.")
        return (f"TLS verification of {server} failed with the CA in {name}: it is not the CA that signed the "
                f"API server's certificate (the cluster CA is CN={_cn(_cluster_ca(cluster))}, as in ca.crt). "
                f"Look: kubectl config view --raw --kubeconfig={name}")
    why = ("connection refused" if "refused" in text.lower() else
           "no answer within 3 s" if "timed out" in text.lower() else type(reason or exc).__name__)
    return (f"Cannot connect to {server} with {name}: {why}. Is the server URL right? "
            f"The lab's API server is {_admin_server(cluster)}.")


def _login(lab) -> Kube:
    """A client built from the learner's file alone (its current-context), as kubectl would use it."""
    try:
        return Kube(_path(lab), timeout=3)
    except Exception as exc:
        # Only kubernetes.config's loader raises ConfigException, and it is imported by then: a
        # file of ckalab's own shape (embedded certificates) needs none of it (ckalab.kube).
        from kubernetes.config import ConfigException

        if not isinstance(exc, ConfigException):
            raise
        fail(f"The Kubernetes client cannot load {_path(lab).name}: {exc}")


@check(3, "the file logs in as the user", after=("test_cluster_entry", "test_user_entry", "test_context"),
       hint="kubectl --kubeconfig=FILE auth whoami")
def test_authenticates_as_user(lab, cluster):
    p, name = lab.params, _path(lab).name
    server = _entry(_config(lab), "clusters", p["cluster"])["server"]
    try:
        who = _login(lab).whoami()
    except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
        fail(_connect_error(lab, cluster, exc, server))
    user = who.get("username")
    groups = ", ".join(who.get("groups") or []) or "none"
    expect(user == p["user"], f"{name} logs in as '{user}' (groups: {groups}), not as '{p['user']}': its user "
           f"entry must carry {p['user']}.crt and {p['user']}.key, not someone else's credentials.")


@check(2, "the user lists pods in the context's namespace", after="test_authenticates_as_user",
       hint="kubectl --kubeconfig=FILE get pods")
def test_lists_pods(lab, cluster, kube):
    p = lab.params
    try:
        pods = _login(lab).list("v1", "Pod", p["namespace"])
    except ApiException as exc:
        fail(f"'{p['user']}' cannot list pods in '{p['namespace']}' ({exc.status} {exc.reason}): "
             f"{api_error_text(exc)}. Check: kubectl auth can-i list pods --as {p['user']} -n {p['namespace']}")
    expected = {i["metadata"]["name"] for i in kube.list("v1", "Pod", p["namespace"])}
    seen = {i["metadata"]["name"] for i in pods}
    expect(seen == expected, f"Listing pods in '{p['namespace']}' as '{p['user']}' returned {sorted(seen)}; "
           f"the namespace holds {sorted(expected)}.")
