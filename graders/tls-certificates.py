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
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from ckalab import pki
from ckalab.grading import check, expect, fail

APISERVER_CN = "kube-apiserver"
DNS_SANS = ("kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local")
MIN_BITS = 2048
PEM_TYPE = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----")
SHORT = {NameOID.COMMON_NAME: "CN", NameOID.ORGANIZATION_NAME: "O", NameOID.ORGANIZATIONAL_UNIT_NAME: "OU",
         NameOID.COUNTRY_NAME: "C", NameOID.STATE_OR_PROVINCE_NAME: "ST", NameOID.LOCALITY_NAME: "L"}
SIGN_CMD = "openssl x509 -req -in {b}.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out {b}.crt"


# --- reading the learner's files: every way a file can be wrong becomes a sentence -----------

def _read(workdir: Path, fname: str) -> bytes:
    path = workdir / fname
    if not path.is_file():
        fail(f"{fname} not found in {workdir}.")
    raw = path.read_bytes()
    expect(raw.strip(), f"{fname} is empty.")
    return raw


def _pem_kind(raw: bytes) -> str | None:
    m = PEM_TYPE.search(raw)
    return m.group(1).decode() if m else None


def load_cert(workdir: Path, fname: str) -> x509.Certificate:
    raw = _read(workdir, fname)
    kind = _pem_kind(raw)
    base = fname.rsplit(".", 1)[0]
    if kind and "PRIVATE KEY" in kind:
        fail(f"{fname} holds a private key ({kind}), not a certificate.")
    if kind in ("CERTIFICATE REQUEST", "NEW CERTIFICATE REQUEST"):
        how = ("openssl x509 -req -in ca.csr -signkey ca.key -out ca.crt" if base == "ca"
               else SIGN_CMD.format(b=base))
        fail(f"{fname} holds a certificate signing request, not a certificate: sign it, e.g. {how}")
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
        fail(f"{fname} is protected by a passphrase: write it unencrypted "
             f"(openssl rsa -in {fname} -out {fname}).")
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


# --- checks ---------------------------------------------------------------------------------

def _pair(workdir: Path, base: str):
    """Both files parse, the key is RSA >= 2048 bits and belongs to the certificate."""
    missing = [f for f in (f"{base}.key", f"{base}.crt") if not (workdir / f).is_file()]
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
            problems.append(f"{base}.key is not an RSA key ({type(key).__name__}); this task asks for RSA: "
                            f"openssl genrsa -out {base}.key {MIN_BITS}")
        elif key.key_size < MIN_BITS:
            problems.append(f"{base}.key is RSA {key.key_size} bits; at least {MIN_BITS} are needed: "
                            f"openssl genrsa -out {base}.key {MIN_BITS}, then make {base}.crt again.")
    if key is not None and cert is not None and not pki.key_matches(key, cert):
        problems.append(f"{base}.key does not belong to {base}.crt (their public keys differ): the certificate "
                        f"was made from another key. Compare: openssl x509 -in {base}.crt -noout -pubkey "
                        f"and openssl pkey -in {base}.key -pubout")
    expect(not problems, "\n".join(problems))
    return key, cert


@check(1, "ca.key and ca.crt: a matching RSA key pair",
       hint="openssl genrsa -out ca.key 2048; openssl req -new ...; openssl x509 -req ... -signkey ca.key")
def test_ca_pair(workdir):
    _pair(workdir, "ca")


@check(1, "admin.key and admin.crt: a matching RSA key pair",
       hint="openssl genrsa -out admin.key 2048, then a request and a certificate from that key")
def test_admin_pair(workdir):
    _pair(workdir, "admin")


@check(1, "apiserver.key and apiserver.crt: a matching RSA key pair",
       hint="openssl genrsa -out apiserver.key 2048, then a request and a certificate from that key")
def test_apiserver_pair(workdir):
    _pair(workdir, "apiserver")


def _expect_cn(fname: str, cert: x509.Certificate, want: str) -> None:
    cns = _values(cert.subject, NameOID.COMMON_NAME)
    got = _subject(cert.subject)
    if cns == [want]:
        return
    if [c.strip() for c in cns] == [want]:
        fail(f"{fname} has the subject {got}: the CN has extra spaces. Write the subject without spaces: "
             f"-subj \"/CN={want}...\"")
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
    spaced = [o for o in orgs if o.strip() == p["admin_group"]]
    if spaced:
        fail(f"admin.crt has the group O={spaced[0]!r}, with spaces: Kubernetes compares group names exactly, "
             f"so it is not the group '{p['admin_group']}' and grants nothing. Write the subject without spaces: "
             f"-subj \"/CN={p['admin_cn']}/O={p['admin_group']}\"")
    if not orgs:
        fail(f"admin.crt has the subject {_subject(cert.subject)}: no group (O). Expected O={p['admin_group']}: "
             f"-subj \"/CN={p['admin_cn']}/O={p['admin_group']}\" (openssl skips an attribute written as '/ O=').")
    fail(f"admin.crt has the groups (O) {', '.join(orgs)}; expected O={p['admin_group']} among them.")


@check(1, "apiserver.crt has the subject CN=kube-apiserver", after="test_apiserver_pair",
       hint="openssl x509 -in apiserver.crt -noout -subject")
def test_apiserver_subject(workdir):
    _expect_cn("apiserver.crt", load_cert(workdir, "apiserver.crt"), APISERVER_CN)


@check(2, "ca.crt is self-signed", after="test_ca_pair",
       hint="openssl x509 -in ca.crt -noout -subject -issuer: a root CA is its own issuer")
def test_ca_self_signed(workdir):
    ca = load_cert(workdir, "ca.crt")
    expect(ca.issuer == ca.subject, f"ca.crt was issued by {_subject(ca.issuer)}, not by itself "
           f"({_subject(ca.subject)}): sign the CA's request with its own key: "
           "openssl x509 -req -in ca.csr -signkey ca.key -out ca.crt")
    expect(pki.signed_by(ca, ca), "ca.crt names itself as issuer but its own public key does not verify "
           "its signature. Make it again: openssl x509 -req -in ca.csr -signkey ca.key -out ca.crt")


def _expect_signed(workdir: Path, base: str) -> None:
    fname = f"{base}.crt"
    cert, ca = load_cert(workdir, fname), load_cert(workdir, "ca.crt")
    if pki.signed_by(cert, ca):
        return
    how = SIGN_CMD.format(b=base)
    if cert.issuer == cert.subject and pki.signed_by(cert, cert):
        fail(f"{fname} is self-signed (issuer {_subject(cert.issuer)} is its own subject), so nothing trusts it. "
             f"A second 'openssl req' does not sign anything; the CA signs the request: {how}")
    if cert.issuer != ca.subject:
        fail(f"{fname} was issued by {_subject(cert.issuer)}; expected your CA {_subject(ca.subject)} (ca.crt). "
             f"Sign it with the CA: {how}")
    fail(f"{fname} names {_subject(ca.subject)} as its issuer, but ca.crt's public key does not verify its "
         f"signature: it was signed by another CA key (were ca.key and ca.crt made again afterwards?). "
         f"Sign it again: {how}")


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
    expect(info.sans, "apiserver.crt has no subjectAltName extension. 'openssl x509 -req' does not copy the "
           "request's extensions: pass the config file when signing (-extfile openssl.cnf -extensions v3_req).")
    missing, extra = sorted(want - info.sans), sorted(info.sans - want)
    if not missing:
        return  # extra names (the node's hostname, 127.0.0.1, ...) are harmless
    msg = f"apiserver.crt lacks the SANs {', '.join(missing)}."
    if extra:
        msg += f" It has these instead: {', '.join(extra)}."
    as_dns = [m[3:] for m in missing if m.startswith("IP:") and f"DNS:{m[3:]}" in info.sans]
    if as_dns:
        msg += f" An address must be an IP entry (IP.1 = {as_dns[0]}), not a DNS entry."
    fail(msg + " Look: openssl x509 -in apiserver.crt -noout -ext subjectAltName")


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
    expect(not bad, "; ".join(bad) + ". Make it again with a validity that covers today (openssl x509 -days N).")


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
                    fname = "apiserver.crt" if side == "client" else "admin.crt"
                    who = (f"A client that trusts only ca.crt rejected apiserver.crt when connecting to {host}"
                           if side == "client" else
                           "The server side (trusting ca.crt for client certificates) rejected admin.crt")
                    fail(f"{who}: {exc.verify_message}. Look at its usages: "
                         f"openssl x509 -in {fname} -noout -ext basicConstraints,keyUsage,extendedKeyUsage")
                except ssl.SSLError as exc:
                    fail(f"The TLS handshake failed on the {side} side: {exc.reason or exc}.")
        c_in.write(s_out.read())
        s_in.write(c_out.read())
        if len(done) == 2:
            return
    fail("The TLS handshake did not complete.")


@check(2, "a real TLS handshake works: server apiserver.crt, client admin.crt, trust ca.crt",
       after=("test_ca_self_signed", "test_admin_signed", "test_apiserver_signed", "test_apiserver_sans",
              "test_not_expired"),
       hint="openssl verify -CAfile ca.crt admin.crt apiserver.crt; check key usages with openssl x509 -noout -text")
def test_tls_handshake(workdir, lab):
    for host in ("kubernetes.default.svc", lab.params["node_ip"]):  # a name and an address SAN, for real
        _handshake(workdir, host)
