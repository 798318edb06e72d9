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

from ckalab import learner_files, pki
from ckalab.grading import check, expect, fail

APISERVER, ETCD = "kube-apiserver", "etcd"
KEYS = ("apiserver_kubelet_client_cert", "apiserver_kubelet_client_key", "apiserver_etcd_client_cert",
        "apiserver_sans", "etcd_server_issuer_cn", "apiserver_cert_expiry", "ca_cn", "etcd_client_ca_file")
CA_NAMES = ("ca.crt", "ca.pem", "etcd/ca.crt", "front-proxy-ca.crt")
FLAG_LINE = re.compile(r"^(-\s+)?--[a-z0-9-]+=")  # "- --etcd-certfile=", as grep shows a manifest line


# --- the learner's file ---------------------------------------------------------------------

def _answers(workdir, lab) -> dict:
    fname = lab.params["answers_file"]
    path = workdir / fname
    if not path.exists():
        fail(f"{fname} not found in {workdir}. 'ckalab start cluster-pki' writes a template to fill in.")
    try:
        data = learner_files.parse_yaml(learner_files.read_bytes(path, name=fname).decode("utf-8"), fname)
    except learner_files.LearnerFileError as exc:
        fail(str(exc))
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


def _path_question(workdir, lab, cluster, key: str, component: str, flag: str, what: str) -> None:
    look = _grep(cluster, component, flag)
    given = _answer(workdir, lab, key, look)
    expect(isinstance(given, str), f"{key} should be a file path, not {_kind(given)}.")
    want = _rel(_flag(cluster, component, flag), cluster, workdir)
    got = _rel(FLAG_LINE.sub("", given.strip()), cluster, workdir)  # a pasted manifest line: its path counts
    if got == want:
        return
    notes = " ".join(_path_notes(got, want, cluster, workdir, component))
    fail(f"{key}: '{given}' is not {what}.{' ' + notes if notes else ''} Look: {look}")


def _path_notes(got: str, want: str, cluster, workdir, component: str) -> list[str]:
    """What the given file is, so the learner sees the mix-up, without naming the right file."""
    notes = []
    uses = [f"{comp} --{flag}" for comp in (APISERVER, ETCD)
            for flag, value in cluster.component_flags(comp).items()
            if value.startswith("/") and _rel(value, cluster, workdir) == got]
    if uses:
        notes.append(f"That file is what {' and '.join(uses)} {'names' if len(uses) == 1 else 'name'}.")
    if got in CA_NAMES and want not in CA_NAMES:
        notes.append(f"{got} is a CA certificate: it verifies other certificates, it does not identify {component}.")
    elif got.endswith(".key") and not want.endswith(".key"):
        notes.append("That is a private key; the question asks for a certificate.")
    elif want.endswith(".key") and not got.endswith(".key"):
        notes.append("The question asks for a private key, not a certificate.")
    return notes


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
                   "kubelet-client-certificate", "the client certificate kube-apiserver presents to kubelets")


@check(1, "2: the key of that certificate", after="test_answers_file",
       hint="grep kubelet-client manifests/kube-apiserver.yaml")
def test_kubelet_client_key(workdir, lab, cluster):
    _path_question(workdir, lab, cluster, "apiserver_kubelet_client_key", APISERVER,
                   "kubelet-client-key", "the key of kube-apiserver's client certificate for kubelets")


@check(2, "3: the API server's client certificate for etcd", after="test_answers_file",
       hint="grep etcd manifests/kube-apiserver.yaml")
def test_etcd_client_cert(workdir, lab, cluster):
    _path_question(workdir, lab, cluster, "apiserver_etcd_client_cert", APISERVER,
                   "etcd-certfile", "the client certificate kube-apiserver presents to etcd")


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
    missing, extra = want - got, sorted(got - want)
    problems = []
    if missing:  # counted, not named: naming them would give the answer away
        dns, ips = sum(s.startswith("DNS:") for s in missing), sum(s.startswith("IP:") for s in missing)
        kinds = [f"{n} {kind}{'' if n == 1 else plural}" for n, kind, plural in
                 ((dns, "DNS name", "s"), (ips, "IP address", "es")) if n]
        problems.append(f"{len(missing)} of its SANs {'is' if len(missing) == 1 else 'are'} missing "
                        f"({' and '.join(kinds)})")
    if extra:
        problems.append(f"not in the certificate: {', '.join(extra)}")
    expect(not problems, f"apiserver_sans: {'; '.join(problems)}. The serving certificate "
           f"(--tls-cert-file={serving}) has {len(want)} SANs. Look: {look}")


@check(2, "5: the issuer of etcd's serving certificate", after="test_answers_file",
       hint="openssl x509 -in pki/etcd/server.crt -noout -issuer")
def test_etcd_server_issuer(workdir, lab, cluster):
    serving = _flag(cluster, ETCD, "cert-file")
    look = f"openssl x509 -in {serving} -noout -issuer"
    given = _cn(_answer(workdir, lab, "etcd_server_issuer_cn", look))
    info = _cert_info(cluster, serving)
    if given == info.issuer_cn:
        return
    cluster_ca = _cert_info(cluster, _flag(cluster, APISERVER, "client-ca-file")).subject_cn
    note = ""
    if given == info.subject_cn:
        note = " That is the certificate's own subject, not who signed it."
    elif given == cluster_ca and info.issuer_cn != cluster_ca:
        note = f" '{cluster_ca}' is the cluster CA, which kube-apiserver trusts for clients; etcd has a CA of its own."
    fail(f"etcd_server_issuer_cn: '{given}' is not the issuer of etcd's serving certificate "
         f"(--cert-file={serving}).{note} Look: {look}")


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
    note = ""
    if given == ca_end:
        note = " That is the CA's expiry; the API server certificate expires sooner."
    elif given == info.not_before.date():
        note = " That is the date it became valid (notBefore); the question asks when it stops being valid."
    elif abs((given - want).days) == 1:
        note = " That is one day off: openssl prints the time in GMT; give the date in GMT."
    fail(f"apiserver_cert_expiry: {given.isoformat()} is not when the API server's serving certificate "
         f"(--tls-cert-file={serving}) expires.{note} Look: {look}")


@check(2, "7: the CN of the cluster CA", after="test_answers_file",
       hint="openssl x509 -in pki/ca.crt -noout -subject")
def test_ca_cn(workdir, lab, cluster):
    ca_file = _flag(cluster, APISERVER, "client-ca-file")
    look = f"openssl x509 -in {ca_file} -noout -subject"
    given = _cn(_answer(workdir, lab, "ca_cn", look))
    if given == _cert_info(cluster, ca_file).subject_cn:
        return
    note = ""
    for rel in ("etcd/ca.crt", "front-proxy-ca.crt"):  # the other CAs of a kubeadm PKI
        try:
            other = _cert_info(cluster, f"{cluster.pki_dir}/{rel}").subject_cn
        except Exception:  # noqa: BLE001 - a file this cluster lacks only means no note about it
            continue
        if given == other and _rel(ca_file, cluster, workdir) != rel:
            note = f" That is the CN of {rel}, a CA for another purpose."
            break
    fail(f"ca_cn: '{given}' is not the CN of the CA kube-apiserver trusts for client certificates "
         f"(--client-ca-file={ca_file}).{note} Look: {look}")


@check(2, "8: the CA etcd trusts for client certificates", after="test_answers_file",
       hint="grep trusted-ca-file manifests/etcd.yaml")
def test_etcd_client_ca(workdir, lab, cluster):
    _path_question(workdir, lab, cluster, "etcd_client_ca_file", ETCD, "trusted-ca-file",
                   "the CA file etcd verifies its clients' certificates against")
