"""Grader for cluster-pki: the learner's answers about the cluster's PKI, compared with what the
running components actually use.

Nothing is hard-coded: each expected value comes from a component's live command-line flags
(cluster.component_flags) and from the certificate files those flags name (cluster.read_file),
so the grader is right on the local backend, on kind, and on any kubeadm layout. Answers are
normalised before comparing: paths absolute or relative to the PKI dir, SANs in any order with
or without prefixes, dates in ISO or openssl form.
"""

from __future__ import annotations

import datetime as dt
import difflib
import ipaddress
import posixpath
import re

import yaml

from ckalab import pki
from ckalab.grading import check, expect, fail

APISERVER, ETCD = "kube-apiserver", "etcd"
KEYS = ("apiserver_kubelet_client_cert", "apiserver_kubelet_client_key", "apiserver_etcd_client_cert",
        "apiserver_sans", "etcd_server_issuer_cn", "apiserver_cert_expiry", "ca_cn", "etcd_client_ca_file")
CA_NAMES = ("ca.crt", "ca.pem", "etcd/ca.crt", "front-proxy-ca.crt")


# --- the learner's file ---------------------------------------------------------------------

def _answers(workdir, lab) -> dict:
    fname = lab.params["answers_file"]
    path = workdir / fname
    if not path.is_file():
        fail(f"{fname} not found in {workdir}. 'ckalab start cluster-pki' writes a template to fill in.")
    try:
        data = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError:
        fail(f"{fname} is not a text file. Write it as YAML, one 'key: answer' line per question.")
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}" if where else ""
        fail(f"{fname} is not valid YAML{at}: {getattr(exc, 'problem', None) or exc}. "
             "Quote values that contain ': ' or start with a special character.")
    expect(isinstance(data, dict), f"{fname} holds {_kind(data)}, not a mapping of answers: write one "
           "'key: answer' line per question, as in the template (e.g. ca_cn: ...).")
    return data


def _kind(value) -> str:
    return "nothing" if value is None else f"a {type(value).__name__}"


def _answer(workdir, lab, key: str, find: str):
    """The learner's answer to one question; a missing key or empty value fails with how to find it."""
    data = _answers(workdir, lab)
    fname = lab.params["answers_file"]
    if key not in data:
        close = difflib.get_close_matches(key, [str(k) for k in data], n=1)
        mean = f" (is '{close[0]}' meant to be '{key}'?)" if close else ""
        fail(f"{fname} has no key '{key}'{mean}. Keep the template's keys. Find the answer: {find}")
    value = data[key]
    expect(value not in (None, "", [], {}), f"{key} is not answered yet. Find it: {find}")
    return value


# --- what the cluster really uses -----------------------------------------------------------

def _manifests(cluster) -> str:
    return posixpath.join(posixpath.dirname(cluster.pki_dir.rstrip("/")), "manifests")


def _flag(cluster, component: str, flag: str) -> str:
    value = cluster.component_flags(component).get(flag)
    expect(value, f"{component} runs without --{flag}: this cluster is not set up as the lab expects "
           f"(see {_manifests(cluster)}/{component}.yaml).")
    return value


def _cert_info(cluster, path: str) -> pki.CertInfo:
    return pki.describe(pki.load_cert(cluster.read_file(path)))


def _grep(cluster, component: str, flag: str) -> str:
    return f"grep -- --{flag} {_manifests(cluster)}/{component}.yaml"


# --- normalising answers ----------------------------------------------------------------------

def _rel(path: str, cluster, workdir) -> str:
    """A path relative to the PKI dir when it lies inside it (however it was written), else normalised."""
    p = posixpath.normpath(str(path).strip())
    pki_dir = posixpath.normpath(cluster.pki_dir)
    if not p.startswith("/"):
        return p[4:] if p.startswith("pki/") else p  # "pki/..." is the work dir's link
    for prefix in (pki_dir, "/etc/kubernetes/pki", str(workdir / "pki")):
        if p.startswith(prefix + "/"):
            return p[len(prefix) + 1:]
    return p


def _path_question(workdir, lab, cluster, key: str, component: str, flag: str, role: str) -> None:
    given = _answer(workdir, lab, key, _grep(cluster, component, flag))
    expect(isinstance(given, str), f"{key} should be a file path, not {_kind(given)}.")
    actual = _flag(cluster, component, flag)
    want = _rel(actual, cluster, workdir)
    got = _rel(given, cluster, workdir)
    if got == want:
        return
    msg = (f"{key}: '{given}' is not it. {role}: {component} runs with --{flag}={actual}, "
           f"that is {want} in the PKI directory.")
    if got in CA_NAMES and want not in CA_NAMES:
        msg += f" {got} is a CA certificate: it verifies other certificates, it does not identify {component}."
    fail(msg)


def _cn(value) -> str:
    """'CN = kubernetes', 'issuer=CN=etcd-ca' or plain 'etcd-ca' -> the CN."""
    s = str(value).strip()
    m = re.search(r"CN\s*=\s*([^,/]+)", s)
    return (m.group(1) if m else s).strip().strip('"')


def _san(item: str) -> str:
    s = re.sub(r"^(DNS|IP( ?Address)?)\s*:\s*", "", item.strip(), flags=re.IGNORECASE).strip().strip('"')
    try:
        return f"IP:{ipaddress.ip_address(s)}"
    except ValueError:
        return f"DNS:{s.lower()}"


_DATE_FORMATS = ("%b %d %H:%M:%S %Y %Z", "%b %d %H:%M:%S %Y", "%b %d, %Y %H:%M %Z", "%b %d %Y", "%d %b %Y",
                 "%Y-%m-%d %H:%M:%S %Z", "%Y/%m/%d")


def _date(value) -> dt.date | None:
    """A date from YAML (date/datetime) or text: ISO, openssl's 'Nov 27 09:50:00 2027 GMT', kubeadm's."""
    if isinstance(value, dt.datetime):
        return (value.astimezone(dt.timezone.utc) if value.tzinfo else value).date()
    if isinstance(value, dt.date):
        return value
    s = re.sub(r"^\s*not\s*after\s*[=:]\s*", "", str(value), flags=re.IGNORECASE)
    s = " ".join(s.split())
    try:
        return _date(dt.datetime.fromisoformat(s.replace("Z", "+00:00")))
    except ValueError:
        pass
    for fmt in _DATE_FORMATS:
        try:
            return dt.datetime.strptime(s, fmt).date()
        except ValueError:
            continue
    return None


# --- checks -----------------------------------------------------------------------------------

@check(1, "the answers file is a YAML mapping", hint="cat answers.yaml; keep the template's keys")
def test_answers_file(workdir, lab):
    _answers(workdir, lab)


@check(2, "1: the API server's client certificate for kubelets", after="test_answers_file",
       hint="grep kubelet-client manifests/kube-apiserver.yaml")
def test_kubelet_client_cert(workdir, lab, cluster):
    _path_question(workdir, lab, cluster, "apiserver_kubelet_client_cert", APISERVER,
                   "kubelet-client-certificate", "The API server authenticates to kubelets with a client certificate")


@check(1, "2: the key of that certificate", after="test_answers_file",
       hint="grep kubelet-client manifests/kube-apiserver.yaml")
def test_kubelet_client_key(workdir, lab, cluster):
    _path_question(workdir, lab, cluster, "apiserver_kubelet_client_key", APISERVER,
                   "kubelet-client-key", "The key that goes with the kubelet client certificate")


@check(2, "3: the API server's client certificate for etcd", after="test_answers_file",
       hint="grep etcd manifests/kube-apiserver.yaml")
def test_etcd_client_cert(workdir, lab, cluster):
    _path_question(workdir, lab, cluster, "apiserver_etcd_client_cert", APISERVER,
                   "etcd-certfile", "The API server is a client of etcd and authenticates with its own certificate")


@check(2, "4: the SANs of the API server's serving certificate", after="test_answers_file",
       hint="openssl x509 -in pki/apiserver.crt -noout -ext subjectAltName")
def test_apiserver_sans(workdir, lab, cluster):
    serving = _flag(cluster, APISERVER, "tls-cert-file")
    look = f"openssl x509 -in {serving} -noout -ext subjectAltName"
    given = _answer(workdir, lab, "apiserver_sans", look)
    if isinstance(given, str):
        given = [given]
    expect(isinstance(given, list), f"apiserver_sans should be a list of names and addresses, not {_kind(given)}.")
    got = {_san(part) for item in given for part in str(item).split(",") if part.strip()}
    want = _cert_info(cluster, serving).sans
    missing, extra = sorted(want - got), sorted(got - want)
    problems = ([f"missing {', '.join(missing)}"] if missing else []) + \
               ([f"not in the certificate: {', '.join(extra)}"] if extra else [])
    expect(not problems, f"apiserver_sans: {'; '.join(problems)}. The serving certificate "
           f"(--tls-cert-file={serving}) has {len(want)} SANs. Look: {look}")


@check(2, "5: the issuer of etcd's serving certificate", after="test_answers_file",
       hint="openssl x509 -in pki/etcd/server.crt -noout -issuer")
def test_etcd_server_issuer(workdir, lab, cluster):
    serving = _flag(cluster, ETCD, "cert-file")
    look = f"openssl x509 -in {serving} -noout -issuer"
    given = _cn(_answer(workdir, lab, "etcd_server_issuer_cn", look))
    want = _cert_info(cluster, serving).issuer_cn
    if given == want:
        return
    cluster_ca = _cert_info(cluster, _flag(cluster, APISERVER, "client-ca-file")).subject_cn
    note = (f" '{cluster_ca}' is the cluster CA; etcd has a CA of its own." if given == cluster_ca and
            want != cluster_ca else "")
    fail(f"etcd_server_issuer_cn: '{given}' is not it. etcd serves with --cert-file={serving}, "
         f"whose issuer is CN={want}.{note} Look: {look}")


@check(2, "6: the expiry date of the API server's serving certificate", after="test_answers_file",
       hint="openssl x509 -in pki/apiserver.crt -noout -enddate")
def test_apiserver_expiry(workdir, lab, cluster):
    serving = _flag(cluster, APISERVER, "tls-cert-file")
    look = f"openssl x509 -in {serving} -noout -enddate"
    raw = _answer(workdir, lab, "apiserver_cert_expiry", look)
    given = _date(raw)
    expect(given, f"apiserver_cert_expiry: '{raw}' is not a date I can read. Write it as 2027-11-27 or "
           f"as openssl prints it (Nov 27 09:50:00 2027 GMT).")
    info = _cert_info(cluster, serving)
    want = info.not_after.date()
    if given == want:
        return
    ca_end = _cert_info(cluster, _flag(cluster, APISERVER, "client-ca-file")).not_after.date()
    note = " That is the CA's expiry; the API server certificate expires sooner." if given == ca_end else ""
    fail(f"apiserver_cert_expiry: {given.isoformat()} is not it. The serving certificate "
         f"(--tls-cert-file={serving}) is valid until {info.not_after:%b %d %H:%M:%S %Y} GMT "
         f"({want.isoformat()}).{note} Look: {look}")


@check(2, "7: the CN of the cluster CA", after="test_answers_file",
       hint="openssl x509 -in pki/ca.crt -noout -subject")
def test_ca_cn(workdir, lab, cluster):
    ca_file = _flag(cluster, APISERVER, "client-ca-file")
    look = f"openssl x509 -in {ca_file} -noout -subject"
    given = _cn(_answer(workdir, lab, "ca_cn", look))
    want = _cert_info(cluster, ca_file).subject_cn
    expect(given == want, f"ca_cn: '{given}' is not it. kube-apiserver trusts client certificates signed by "
           f"--client-ca-file={ca_file}, whose subject is CN={want}. Look: {look}")


@check(2, "8: the CA etcd trusts for client certificates", after="test_answers_file",
       hint="grep trusted-ca-file manifests/etcd.yaml")
def test_etcd_client_ca(workdir, lab, cluster):
    _path_question(workdir, lab, cluster, "etcd_client_ca_file", ETCD, "trusted-ca-file",
                   "etcd verifies its clients (such as the API server) against its own CA")
