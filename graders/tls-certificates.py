"""Grader for tls-certificates: a CA, an admin client cert and an API server cert made by hand.

Everything is read from the files the learner wrote, with `cryptography`, so any tool that
writes standard PEM (openssl genrsa or genpkey, PKCS#1 or PKCS#8 keys, Python) is accepted.
The last check is behaviour: a real in-memory mutual-TLS handshake with the learner's files.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import ssl
import tempfile
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from ckalab import learner_files, pki
from ckalab.grading import check, expect, fail

APISERVER_CN = "kube-apiserver"
DNS_SANS = ("kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local")
MIN_BITS = 2048
PEM_TYPE = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----")
SHORT = {NameOID.COMMON_NAME: "CN", NameOID.ORGANIZATION_NAME: "O", NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
         NameOID.COUNTRY_NAME: "C", NameOID.STATE_OR_PROVINCE_NAME: "ST", NameOID.LOCALITY_NAME: "L"}


# --- reading the learner's files: every way a file can be wrong becomes a sentence -----------

def _read(workdir: Path, fname: str) -> bytes:
    path = workdir / fname
    if not path.exists():
        fail(f"{fname} not found in {workdir}.")
    try:
        raw = learner_files.read_bytes(path, name=fname)
    except learner_files.LearnerFileError as exc:
        fail(str(exc))
    expect(raw.strip(), f"{fname} is empty.")
    return raw


def _pem_kind(raw: bytes) -> str | None:
    m = PEM_TYPE.search(raw)
    return m.group(1).decode() if m else None


def load_cert(workdir: Path, fname: str) -> x509.Certificate:
    raw = _read(workdir, fname)
    kind = _pem_kind(raw)
    if kind and "PRIVATE KEY" in kind:
        fail(f"{fname} holds a private key ({kind}), not a certificate.")
    if kind in ("CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"):
        fail(f"{fname} holds a certificate signing request, not a certificate: a request only asks for a "
             f"certificate, someone still has to sign it. Look: openssl req -in {fname} -noout -subject")
    if kind not in (None, "CERTIFICATE", "TRUSTED CERTIFICATE"):
        fail(f"{fname} holds a {kind}, not a certificate.")
    try:
        return pki.load_cert(raw)
    except ValueError:
        fail(f"{fname} is not a certificate: no PEM '-----BEGIN CERTIFICATE-----' block that parses, "
             f"and not DER either. Look at it: openssl x509 -in {fname} -noout -text")


def load_key(workdir: Path, fname: str):
    raw = _read(workdir, fname)
    kind = _pem_kind(raw) or ""
    if kind == "ENCRYPTED PRIVATE KEY" or b"Proc-Type: 4,ENCRYPTED" in raw:
        fail(f"{fname} is protected by a passphrase; the task asks for keys without one "
             f"(the API server and kubectl cannot prompt for it). Look: head -n 3 {fname}")
    if kind and "PRIVATE KEY" not in kind:
        fail(f"{fname} holds a {kind}, not a private key.")
    try:
        return _parse_key(raw, bool(kind))
    except (ValueError, TypeError, NotImplementedError):
        fail(f"{fname} is not a private key that parses (PEM or DER). "
             f"Look at it: openssl pkey -in {fname} -noout -text")


@functools.lru_cache(maxsize=16)
def _parse_key(raw: bytes, pem: bool):
    """Parse once per content. RSA's consistency check costs ~100 ms a key, and a key that loads
    but is inconsistent is still caught: key_matches compares it with the certificate and the
    TLS handshake signs with it."""
    load = serialization.load_pem_private_key if pem else serialization.load_der_private_key
    return load(raw, password=None, unsafe_skip_rsa_key_validation=True)


def _subject(name: x509.Name) -> str:
    """A subject as /CN=.../O=..., quoting values with stray spaces so they stand out."""
    parts = []
    for a in name:
        v = a.value if isinstance(a.value, str) else a.value.decode(errors="replace")
        parts.append(f"/{SHORT.get(a.oid, a.oid.dotted_string)}={repr(v) if v != v.strip() else v}")
    return "".join(parts) or "(empty)"


def _values(name: x509.Name, oid) -> list[str]:
    return [a.value for a in name.get_attributes_for_oid(oid)]


def _key_kind(key) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return f"EC {key.curve.name}"
    return type(key).__name__.removeprefix("_").replace("PrivateKey", "") or "unknown"


def _ext(cert: x509.Certificate, cls):
    """The extension of that class, or None (a v1 certificate has none at all)."""
    try:
        return cert.extensions.get_extension_for_class(cls)
    except x509.ExtensionNotFound:
        return None


def _usages(ku: x509.KeyUsage) -> list[str]:
    """Key usage bits by the names `openssl x509 -text` prints."""
    names = {"digital_signature": "Digital Signature", "content_commitment": "Non Repudiation",
             "key_encipherment": "Key Encipherment", "data_encipherment": "Data Encipherment",
             "key_agreement": "Key Agreement", "key_cert_sign": "Certificate Sign", "crl_sign": "CRL Sign"}
    return [label for attr, label in names.items() if getattr(ku, attr)]


# --- checks ---------------------------------------------------------------------------------

def _pair(workdir: Path, base: str):
    """Both files parse, the key is RSA >= 2048 bits and belongs to the certificate."""
    missing = [f for f in (f"{base}.key", f"{base}.crt") if not (workdir / f).exists()]
    expect(not missing, f"{' and '.join(missing)} not found in {workdir}.")
    problems = []
    key = cert = None
    for fname, loader in ((f"{base}.key", load_key), (f"{base}.crt", load_cert)):
        try:
            obj = loader(workdir, fname)
        except AssertionError as exc:
            problems.append(str(exc))
            continue
        key, cert = (obj, cert) if fname.endswith(".key") else (key, obj)
    if key is not None:
        if not isinstance(key, rsa.RSAPrivateKey):
            problems.append(f"{base}.key is not an RSA key ({_key_kind(key)}); this task asks for RSA keys. "
                            f"Look: openssl pkey -in {base}.key -noout -text | head -n 1")
        elif key.key_size < MIN_BITS:
            problems.append(f"{base}.key is RSA {key.key_size} bits; the task asks for at least {MIN_BITS}. "
                            f"Look: openssl pkey -in {base}.key -noout -text | head -n 1")
    if key is not None and cert is not None and not pki.key_matches(key, cert):
        problems.append(f"{base}.key does not belong to {base}.crt (their public keys differ): the certificate "
                        f"was made from another key. Compare: openssl x509 -in {base}.crt -noout -pubkey "
                        f"and openssl pkey -in {base}.key -pubout")
    expect(not problems, "\n".join(problems))
    return key, cert


@check(1, "ca.key and ca.crt: a matching RSA key pair",
       hint="ls -l ca.key ca.crt; openssl pkey -in ca.key -noout -text | head -n 1")
def test_ca_pair(workdir):
    _pair(workdir, "ca")


@check(1, "admin.key and admin.crt: a matching RSA key pair",
       hint="ls -l admin.key admin.crt; openssl pkey -in admin.key -noout -text | head -n 1")
def test_admin_pair(workdir):
    _pair(workdir, "admin")


@check(1, "apiserver.key and apiserver.crt: a matching RSA key pair",
       hint="ls -l apiserver.key apiserver.crt; openssl pkey -in apiserver.key -noout -text | head -n 1")
def test_apiserver_pair(workdir):
    _pair(workdir, "apiserver")


def _expect_cn(fname: str, cert: x509.Certificate, want: str) -> None:
    cns = _values(cert.subject, NameOID.COMMON_NAME)
    got = _subject(cert.subject)
    if cns == [want]:
        return
    if [c.strip() for c in cns] == [want]:
        fail(f"{fname} has the subject {got}: the CN carries extra spaces, so it is not the name {want!r} "
             f"(names are compared exactly). Look: openssl x509 -in {fname} -noout -subject")
    fail(f"{fname} has the subject {got}; expected CN={want}. Look: openssl x509 -in {fname} -noout -subject")


@check(1, "ca.crt has the CA's subject (CN)", after="test_ca_pair",
       hint="openssl x509 -in ca.crt -noout -subject")
def test_ca_subject(workdir, lab):
    _expect_cn("ca.crt", load_cert(workdir, "ca.crt"), lab.params["ca_cn"])


@check(2, "admin.crt has the user CN and the group O", after="test_admin_pair",
       hint="openssl x509 -in admin.crt -noout -subject")
def test_admin_subject(workdir, lab):
    p = lab.params
    cert = load_cert(workdir, "admin.crt")
    _expect_cn("admin.crt", cert, p["admin_cn"])
    orgs = _values(cert.subject, NameOID.ORGANIZATION_NAME)
    if p["admin_group"] in orgs:
        return
    look = "Look: openssl x509 -in admin.crt -noout -subject"
    spaced = [o for o in orgs if o.strip() == p["admin_group"]]
    if spaced:
        fail(f"admin.crt has the group O={spaced[0]!r}, with spaces: Kubernetes compares group names exactly, "
             f"so it is not the group '{p['admin_group']}' and grants nothing. {look}")
    if not orgs:
        fail(f"admin.crt has the subject {_subject(cert.subject)}: no group (O); expected O={p['admin_group']}. "
             f"(openssl drops an attribute written with a space before it, as in '/ O='.) {look}")
    fail(f"admin.crt has the groups (O) {', '.join(orgs)}; expected O={p['admin_group']} among them. {look}")


@check(1, "apiserver.crt has the subject CN=kube-apiserver", after="test_apiserver_pair",
       hint="openssl x509 -in apiserver.crt -noout -subject")
def test_apiserver_subject(workdir):
    _expect_cn("apiserver.crt", load_cert(workdir, "apiserver.crt"), APISERVER_CN)


@check(2, "ca.crt is self-signed", after="test_ca_pair",
       hint="openssl x509 -in ca.crt -noout -subject -issuer: a root CA is its own issuer")
def test_ca_self_signed(workdir):
    ca = load_cert(workdir, "ca.crt")
    expect(ca.issuer == ca.subject, f"ca.crt was issued by {_subject(ca.issuer)}, not by itself "
           f"({_subject(ca.subject)}): a root CA signs its own certificate with its own key. "
           "Look: openssl x509 -in ca.crt -noout -subject -issuer")
    expect(pki.signed_by(ca, ca), "ca.crt names itself as issuer but its own public key does not verify "
           "its signature: it was not signed with the key in ca.crt. Look: openssl verify -CAfile ca.crt ca.crt")


CA_LOOK = "Look: openssl x509 -in ca.crt -noout -text | grep -A1 -E 'Version|Basic Constraints|Key Usage'"


def ca_problems(ca: x509.Certificate) -> list[str]:
    """Why ca.crt cannot act as a CA for a strict verifier, in the learner's words; [] when it can.

    RFC 5280 asks a CA certificate for basicConstraints CA:TRUE marked critical and a keyUsage with
    keyCertSign. Measured: OpenSSL 3.0's 'x509 -req -signkey' without extensions writes version 1,
    which 3.0 and 3.6 still trust by default but `verify -x509_strict` and `cryptography` refuse;
    OpenSSL 3.6's same command writes version 3 with only a key identifier, which plain
    `openssl verify` refuses ("invalid CA certificate")."""
    if ca.version == x509.Version.v1:
        return ["ca.crt is an X.509 version 1 certificate (Version: 1 (0x0)): it carries no extensions, so nothing "
                "in it says it is a CA (no basicConstraints CA:TRUE, no keyCertSign). 'openssl x509 -req -signkey' "
                "makes one on OpenSSL 3.0 when given no extensions. Strict verifiers (openssl verify -x509_strict, "
                "Python's cryptography) refuse it as a CA, and on OpenSSL 3.2+ the same command makes a version 3 "
                "certificate without CA:TRUE, which even plain openssl verify refuses."]
    problems = []
    bc = _ext(ca, x509.BasicConstraints)
    if bc is None:
        problems.append("ca.crt has no basicConstraints extension, so it does not say it is a CA: "
                        "a CA certificate carries basicConstraints CA:TRUE, marked critical.")
    elif not bc.value.ca:
        problems.append("ca.crt has basicConstraints CA:FALSE: it declares itself not a CA, so nothing it "
                        "signed is trusted.")
    elif not bc.critical:
        problems.append("ca.crt has basicConstraints CA:TRUE but not marked critical; RFC 5280 requires a CA "
                        "to mark it critical and strict verifiers refuse it otherwise.")
    ku = _ext(ca, x509.KeyUsage)
    if ku is None:
        problems.append("ca.crt has no keyUsage extension; a CA certificate lists keyCertSign "
                        "(Certificate Sign), and strict verifiers refuse a CA without it.")
    elif not ku.value.key_cert_sign:
        problems.append(f"ca.crt's key usage is {', '.join(_usages(ku.value)) or '(empty)'}, without "
                        "Certificate Sign (keyCertSign): it may not sign certificates.")
    return problems


@check(2, "ca.crt is a CA: basicConstraints CA:TRUE and key usage keyCertSign", after="test_ca_pair",
       hint="openssl x509 -in ca.crt -noout -text: Version, X509v3 Basic Constraints, X509v3 Key Usage")
def test_ca_is_ca(workdir):
    problems = ca_problems(load_cert(workdir, "ca.crt"))
    expect(not problems, "\n".join(problems + [CA_LOOK]))


def _leaf_problems(fname: str, role: str, cert: x509.Certificate) -> list[str]:
    bc, ku = _ext(cert, x509.BasicConstraints), _ext(cert, x509.KeyUsage)
    out = []
    if bc is not None and bc.value.ca:
        out.append(f"{fname} has basicConstraints CA:TRUE: {role} must not be a CA. It is signed by ca.crt, so "
                   f"whoever holds {fname[:-4]}.key could issue certificates for any name or group that "
                   "everything trusting ca.crt would accept.")
    if ku is not None and (ku.value.key_cert_sign or ku.value.crl_sign):
        out.append(f"{fname} has the key usage {', '.join(_usages(ku.value))}: signing certificates or CRLs "
                   f"is for a CA, not for {role}.")
    return out


@check(2, "admin.crt and apiserver.crt are not CAs", after=("test_admin_pair", "test_apiserver_pair"),
       hint="openssl x509 -in admin.crt -noout -ext basicConstraints,keyUsage (and the same for apiserver.crt)")
def test_leaves_not_ca(workdir):
    problems, looks = [], []
    for fname, role in (("admin.crt", "a client certificate"), ("apiserver.crt", "a server certificate")):
        found = _leaf_problems(fname, role, load_cert(workdir, fname))
        problems += found
        looks += [f"openssl x509 -in {fname} -noout -ext basicConstraints,keyUsage"] if found else []
    expect(not problems, "\n".join(problems + ["Look: " + "; ".join(looks)]))


def _expect_signed(workdir: Path, base: str) -> None:
    fname = f"{base}.crt"
    cert, ca = load_cert(workdir, fname), load_cert(workdir, "ca.crt")
    if pki.signed_by(cert, ca):
        return
    look = f"Look: openssl x509 -in {fname} -noout -issuer; openssl verify -CAfile ca.crt {fname}"
    if cert.issuer == cert.subject and pki.signed_by(cert, cert):
        fail(f"{fname} is self-signed (issuer {_subject(cert.issuer)} is its own subject), so nothing trusts it. "
             f"A second 'openssl req' does not sign anything: the CA has to sign the request. {look}")
    if cert.issuer != ca.subject:
        fail(f"{fname} was issued by {_subject(cert.issuer)}; expected your CA {_subject(ca.subject)} (ca.crt). "
             f"{look}")
    fail(f"{fname} names {_subject(ca.subject)} as its issuer, but ca.crt's public key does not verify its "
         f"signature: it was signed by another CA key (were ca.key and ca.crt made again afterwards?). {look}")


@check(2, "admin.crt is signed by the CA", after=("test_admin_pair", "test_ca_pair"),
       hint="openssl verify -CAfile ca.crt admin.crt")
def test_admin_signed(workdir):
    _expect_signed(workdir, "admin")


@check(2, "apiserver.crt is signed by the CA", after=("test_apiserver_pair", "test_ca_pair"),
       hint="openssl verify -CAfile ca.crt apiserver.crt")
def test_apiserver_signed(workdir):
    _expect_signed(workdir, "apiserver")


@check(3, "apiserver.crt carries every Subject Alternative Name", after="test_apiserver_pair",
       hint="openssl x509 -in apiserver.crt -noout -ext subjectAltName")
def test_apiserver_sans(workdir, lab):
    p = lab.params
    info = pki.describe(load_cert(workdir, "apiserver.crt"))
    want = {f"DNS:{d}" for d in DNS_SANS} | {f"IP:{p['service_ip']}", f"IP:{p['node_ip']}"}
    look = "Look: openssl x509 -in apiserver.crt -noout -ext subjectAltName"
    expect(info.sans, "apiserver.crt has no subjectAltName extension. The names in a request do not reach the "
           f"certificate by themselves: 'openssl x509 -req' does not copy a request's extensions. {look}")
    missing, extra = sorted(want - info.sans), sorted(info.sans - want)
    if not missing:
        return  # extra names (the node's hostname, 127.0.0.1, ...) are harmless
    msg = f"apiserver.crt lacks the SANs {', '.join(missing)}."
    if extra:
        msg += f" It has these instead: {', '.join(extra)}."
    as_dns = [m[3:] for m in missing if m.startswith("IP:") and f"DNS:{m[3:]}" in info.sans]
    if as_dns:
        msg += f" {as_dns[0]} is listed as a DNS name; clients dialling an address look for an IP SAN."
    fail(f"{msg} {look}")


@check(1, "the certificates are valid now", after=("test_ca_pair", "test_admin_pair", "test_apiserver_pair"),
       hint="openssl x509 -in FILE -noout -dates")
def test_not_expired(workdir):
    now = dt.datetime.now(dt.timezone.utc)
    bad = []
    for fname in ("ca.crt", "admin.crt", "apiserver.crt"):
        c = load_cert(workdir, fname)
        if c.not_valid_after_utc <= now:
            bad.append(f"{fname} expired on {c.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
        elif c.not_valid_before_utc > now + dt.timedelta(minutes=5):
            bad.append(f"{fname} is not valid before {c.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")
    expect(not bad, "; ".join(bad) + ". Look: openssl x509 -in FILE -noout -dates")


# OpenSSL 3 verify codes that mean "the issuer may not act as a CA": invalid CA certificate (79),
# key usage without keyCertSign (32), and the strict-mode CA profile: basicConstraints not
# critical (89), no key usage (92).
NOT_A_CA = {79, 32, 89, 92}


def _handshake(workdir: Path, host: str) -> None:
    """Mutual TLS through memory buffers: no sockets, no ports, a few milliseconds."""
    ca = load_cert(workdir, "ca.crt")
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        for base in ("admin", "apiserver"):
            (t / f"{base}.crt").write_bytes(pki.cert_pem(load_cert(workdir, f"{base}.crt")))
            (t / f"{base}.key").write_bytes(pki.key_pem(load_key(workdir, f"{base}.key")))
        server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        server.load_cert_chain(t / "apiserver.crt", t / "apiserver.key")
        server.verify_mode = ssl.CERT_REQUIRED
        server.load_verify_locations(cadata=pki.cert_pem(ca).decode())
        client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client.load_verify_locations(cadata=pki.cert_pem(ca).decode())
        client.load_cert_chain(t / "admin.crt", t / "admin.key")
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    sides = {"client": client.wrap_bio(c_in, c_out, server_hostname=host),
             "server": server.wrap_bio(s_in, s_out, server_side=True)}
    done: set[str] = set()
    for _ in range(10):
        for side, obj in sides.items():
            if side not in done:
                try:
                    obj.do_handshake()
                    done.add(side)
                except ssl.SSLWantReadError:
                    pass
                except ssl.SSLCertVerificationError as exc:
                    fail(_verify_failure(side, host, exc, ca))
                except ssl.SSLError as exc:
                    fail(f"The TLS handshake failed on the {side} side: {exc.reason or exc}.")
        c_in.write(s_out.read())
        s_in.write(c_out.read())
        if len(done) == 2:
            return
    fail("The TLS handshake did not complete.")


def _verify_failure(side: str, host: str, exc: ssl.SSLCertVerificationError, ca: x509.Certificate) -> str:
    """Blame the certificate that is at fault: the CA when it may not sign, otherwise the leaf."""
    fname = "apiserver.crt" if side == "client" else "admin.crt"
    who = (f"A client that trusts only ca.crt rejected apiserver.crt when connecting to {host}"
           if side == "client" else "The server side (trusting ca.crt for client certificates) rejected admin.crt")
    if exc.verify_code in NOT_A_CA:
        why = " ".join(ca_problems(ca)) or "ca.crt is not accepted as a certificate authority."
        return (f"{who}, because ca.crt is not a usable CA ({exc.verify_message}), not because of {fname}: "
                f"{why} {CA_LOOK}")
    return (f"{who}: {exc.verify_message}. Look at its usages: "
            f"openssl x509 -in {fname} -noout -ext basicConstraints,keyUsage,extendedKeyUsage")


@check(2, "a real TLS handshake works: server apiserver.crt, client admin.crt, trust ca.crt",
       after=("test_ca_self_signed", "test_ca_is_ca", "test_admin_signed", "test_apiserver_signed",
              "test_apiserver_sans", "test_not_expired"),
       hint="openssl verify -CAfile ca.crt admin.crt apiserver.crt; openssl x509 -in FILE -noout -ext "
            "keyUsage,extendedKeyUsage")
def test_tls_handshake(workdir, lab):
    for host in ("kubernetes.default.svc", lab.params["node_ip"]):  # a name and an address SAN, for real
        _handshake(workdir, host)
