"""tls-certificates grader: the openssl reference and other correct forms pass; each erratum and
each malformed file fails the right check with a pinned message."""

import datetime as dt
import importlib.util
import os
import re
import shutil
import subprocess

import pytest
from conftest import check_of, failed_ids
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509 import verification as xv

from ckalab import labs, pki

LAB = "tls-certificates"
ALL = {"test_ca_pair", "test_admin_pair", "test_apiserver_pair", "test_ca_subject", "test_admin_subject",
       "test_apiserver_subject", "test_ca_self_signed", "test_admin_signed", "test_apiserver_signed",
       "test_apiserver_sans", "test_not_expired", "test_tls_handshake", "test_ca_is_ca", "test_leaves_not_ca"}

# An openssl config whose SANs are given by the test (the reference writes its own in solve.sh).
CNF = """[req]
req_extensions = v3_req
distinguished_name = dn
[dn]
[v3_req]
subjectAltName = {sans}
"""
SIGN = "openssl x509 -req -in {b}.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out {b}.crt"


def resign_apiserver(h, sans: str):
    """Make apiserver.crt again from the reference's key, with the given subjectAltName value."""
    h.write("san.cnf", CNF.format(sans=sans))
    h.sh("openssl req -new -key apiserver.key -subj /CN=kube-apiserver -out apiserver.csr\n"
         + SIGN.format(b="apiserver") + " -extfile san.cnf -extensions v3_req")


def resign_with(h, base: str, section: str):
    """Sign base.csr again with the reference CA, with these lines as the extension section."""
    h.write(f"{base}-ext.cnf", f"[v3]\n{section}")
    h.sh(SIGN.format(b=base) + f" -extfile {base}-ext.cnf -extensions v3")


def test_fresh_start_fails_naming_every_check(lab_harness):
    h = lab_harness(LAB)
    r = h.grade()
    assert not r.passed and r.score == 0
    assert failed_ids(r) == ALL
    assert check_of(r, "test_ca_pair").message == f"ca.key and ca.crt not found in {h.workdir}."
    assert check_of(r, "test_admin_signed").message == (
        'Not checked yet: first fix "admin.key and admin.crt: a matching RSA key pair".')


def test_reference_solution_passes(lab_harness):
    h = lab_harness(LAB)
    h.solve()
    r = h.grade()
    assert r.passed, r.render()
    assert r.score == r.max_score == 23


def test_seeded_variant_reference_passes_and_uses_its_names(lab_harness):
    h = lab_harness(LAB, seed="variant-7")
    assert h.params != labs.load(LAB).params  # the seed picks other names
    h.solve()
    assert h.grade().passed
    admin = pki.describe(pki.load_cert(h.workdir / "admin.crt"))
    assert (admin.subject_cn, admin.subject_orgs) == (h.params["admin_cn"], [h.params["admin_group"]])


def test_genpkey_4096_pkcs8_extra_org_other_san_order_passes(lab_harness):
    h = lab_harness(LAB)
    h.write("api.cnf", CNF.format(sans="IP:172.17.0.87, DNS:kubernetes.default.svc.cluster.local, "
                                       "DNS:kubernetes.default.svc, IP:10.96.0.1, DNS:kubernetes.default, "
                                       "DNS:kubernetes, DNS:controlplane"))
    h.sh("""
openssl genrsa -traditional -out ca.key 3072
for b in admin apiserver; do openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:4096 -out $b.key; done
openssl req -x509 -new -key ca.key -subj "/CN=KUBERNETES-CA" -days 365 -addext keyUsage=keyCertSign -out ca.crt
openssl req -new -key admin.key -subj "/CN=kube-admin/O=system:masters/O=ops" -out admin.csr
openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out admin.crt
openssl req -new -key apiserver.key -subj "/CN=kube-apiserver" -config api.cnf -out apiserver.csr
openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out apiserver.crt \
  -extfile api.cnf -extensions v3_req
""")
    assert b"BEGIN RSA PRIVATE KEY" in (h.workdir / "ca.key").read_bytes()  # PKCS#1
    assert b"BEGIN PRIVATE KEY" in (h.workdir / "admin.key").read_bytes()  # PKCS#8
    r = h.grade()
    assert r.passed, r.render()


def test_python_cryptography_certificates_pass(lab_harness):
    h = lab_harness(LAB)
    ca_key, ca = pki.make_ca("KUBERNETES-CA")
    pki.write_pair(h.workdir, "ca", ca_key, ca)
    pki.write_pair(h.workdir, "admin", *pki.sign(ca_key, ca, "kube-admin", orgs=("system:masters",)))
    pki.write_pair(h.workdir, "apiserver", *pki.sign(
        ca_key, ca, "kube-apiserver", usages=(pki.SERVER_AUTH,), ips=("10.96.0.1", "172.17.0.87"),
        dns=("kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local")))
    r = h.grade()
    assert r.passed, r.render()


def test_group_with_a_space_fails(lab_harness):
    h = lab_harness(LAB)
    h.solve()
    h.sh('openssl req -new -key admin.key -subj "/CN=kube-admin/O= system:masters" -out admin.csr\n'
         + SIGN.format(b="admin"))
    r = h.grade()
    assert failed_ids(r) == {"test_admin_subject"}
    assert check_of(r, "test_admin_subject").message == (
        "admin.crt has the group O=' system:masters', with spaces: Kubernetes compares group names exactly, "
        "so it is not the group 'system:masters' and grants nothing. Look: openssl x509 -in admin.crt -noout -subject")


def test_space_before_attribute_drops_the_group(lab_harness):
    h = lab_harness(LAB)
    h.solve()
    h.sh('openssl req -new -key admin.key -subj "/CN=kube-admin/ O=system:masters" -out admin.csr\n'
         + SIGN.format(b="admin"))
    r = h.grade()
    assert failed_ids(r) == {"test_admin_subject"}
    assert check_of(r, "test_admin_subject").message == (
        "admin.crt has the subject /CN=kube-admin: no group (O); expected O=system:masters. (openssl drops an "
        "attribute written with a space before it, as in '/ O='.) Look: openssl x509 -in admin.crt -noout -subject")


def test_admin_made_by_a_second_req_is_self_signed_and_fails(lab_harness):
    h = lab_harness(LAB)
    h.solve()
    h.sh('openssl req -new -x509 -key admin.key -subj "/CN=kube-admin/O=system:masters" -out admin.crt')
    r = h.grade()
    # Debian's and upstream's openssl.cnf give 'req -x509' the CA extensions: a self-signed CA:TRUE leaf
    assert failed_ids(r) == {"test_admin_signed", "test_leaves_not_ca", "test_tls_handshake"}
    assert check_of(r, "test_admin_signed").message == (
        "admin.crt is self-signed (issuer /CN=kube-admin/O=system:masters is its own subject), so nothing "
        "trusts it. A second 'openssl req' does not sign anything: the CA has to sign the request. "
        "Look: openssl x509 -in admin.crt -noout -issuer; openssl verify -CAfile ca.crt admin.crt")
    assert check_of(r, "test_tls_handshake").message == 'Not checked yet: first fix "admin.crt is signed by the CA".'


def test_csr_saved_as_certificate_fails(lab_harness):
    h = lab_harness(LAB)
    h.solve()
    h.sh('openssl req -new -key admin.key -subj "/CN=kube-admin/O=system:masters" -out admin.crt')
    r = h.grade()
    assert check_of(r, "test_admin_pair").message == (
        "admin.crt holds a certificate signing request, not a certificate: a request only asks for a "
        "certificate, someone still has to sign it. Look: openssl req -in admin.crt -noout -subject")


def test_signed_by_an_older_ca_fails(lab_harness):
    h = lab_harness(LAB)
    h.solve()
    h.sh('openssl genrsa -out ca.key 2048\nopenssl req -x509 -new -key ca.key -subj "/CN=KUBERNETES-CA" '
         '-addext keyUsage=critical,keyCertSign -out ca.crt')
    r = h.grade()
    assert failed_ids(r) == {"test_admin_signed", "test_apiserver_signed", "test_tls_handshake"}
    assert check_of(r, "test_apiserver_signed").message == (
        "apiserver.crt names /CN=KUBERNETES-CA as its issuer, but ca.crt's public key does not verify its "
        "signature: it was signed by another CA key (were ca.key and ca.crt made again afterwards?). "
        "Look: openssl x509 -in apiserver.crt -noout -issuer; openssl verify -CAfile ca.crt apiserver.crt")


def test_signing_without_extfile_loses_the_sans(lab_harness):
    h = lab_harness(LAB)
    h.solve()
    resign_apiserver(h, "DNS:kubernetes")  # a request with a SAN ...
    h.sh(SIGN.format(b="apiserver"))  # ... that x509 -req drops when no -extfile names it again
    r = h.grade()
    assert failed_ids(r) == {"test_apiserver_sans", "test_tls_handshake"}
    assert check_of(r, "test_apiserver_sans").message == (
        "apiserver.crt has no subjectAltName extension. The names in a request do not reach the certificate by "
        "themselves: 'openssl x509 -req' does not copy a request's extensions. "
        "Look: openssl x509 -in apiserver.crt -noout -ext subjectAltName")


def test_missing_and_misfiled_sans_are_listed(lab_harness):
    h = lab_harness(LAB)
    h.solve()
    resign_apiserver(h, "DNS:kubernetes, DNS:kubernetes.default, DNS:kubernetes.default.svc, "
                        "DNS:10.96.0.1, IP:172.17.0.78")
    r = h.grade()
    assert failed_ids(r) == {"test_apiserver_sans", "test_tls_handshake"}
    assert check_of(r, "test_apiserver_sans").message == (
        "apiserver.crt lacks the SANs DNS:kubernetes.default.svc.cluster.local, IP:10.96.0.1, IP:172.17.0.87. "
        "It has these instead: DNS:10.96.0.1, IP:172.17.0.78. 10.96.0.1 is listed as a DNS name; clients dialling "
        "an address look for an IP SAN. Look: openssl x509 -in apiserver.crt -noout -ext subjectAltName")


def test_key_that_does_not_match_fails(lab_harness):
    h = lab_harness(LAB)
    h.solve()
    h.sh("openssl genrsa -out admin.key 2048")
    r = h.grade()
    assert "test_admin_pair" in failed_ids(r)
    assert check_of(r, "test_admin_pair").message == (
        "admin.key does not belong to admin.crt (their public keys differ): the certificate was made from "
        "another key. Compare: openssl x509 -in admin.crt -noout -pubkey and openssl pkey -in admin.key -pubout")


def test_1024_bit_key_fails(lab_harness):
    h = lab_harness(LAB)
    h.solve()
    h.sh("openssl genrsa -out apiserver.key 1024\n"
         "openssl req -new -key apiserver.key -subj /CN=kube-apiserver -out apiserver.csr\n"
         + SIGN.format(b="apiserver") + " -extfile openssl.cnf -extensions v3_server")
    r = h.grade()
    assert failed_ids(r) >= {"test_apiserver_pair"}
    assert check_of(r, "test_apiserver_pair").message == (
        "apiserver.key is RSA 1024 bits; the task asks for at least 2048. "
        "Look: openssl pkey -in apiserver.key -noout -text | head -n 1")


def test_expired_certificate_fails(lab_harness):
    h = lab_harness(LAB)
    h.solve()
    ca, ca_key = pki.load_cert(h.workdir / "ca.crt"), pki.load_key(h.workdir / "ca.key")
    admin = pki.load_cert(h.workdir / "admin.crt")
    old = (x509.CertificateBuilder().subject_name(admin.subject).issuer_name(ca.subject)
           .public_key(admin.public_key()).serial_number(x509.random_serial_number())
           .not_valid_before(dt.datetime(2020, 1, 1)).not_valid_after(dt.datetime(2021, 1, 1))
           .sign(ca_key, hashes.SHA256()))
    h.write("admin.crt", pki.cert_pem(old))
    r = h.grade()
    assert failed_ids(r) == {"test_not_expired", "test_tls_handshake"}
    assert check_of(r, "test_not_expired").message == (
        "admin.crt expired on 2021-01-01 00:00 UTC. Look: openssl x509 -in FILE -noout -dates")


def test_server_only_usage_on_the_client_cert_fails_the_handshake(lab_harness):
    h = lab_harness(LAB)
    h.solve()
    resign_with(h, "admin", "extendedKeyUsage = serverAuth\n")
    r = h.grade()
    assert failed_ids(r) == {"test_tls_handshake"}
    assert check_of(r, "test_tls_handshake").message == (
        "The server side (trusting ca.crt for client certificates) rejected admin.crt: unsuitable certificate "
        "purpose. Look at its usages: "
        "openssl x509 -in admin.crt -noout -ext basicConstraints,keyUsage,extendedKeyUsage")


def test_malformed_files_fail_with_clear_messages(lab_harness):
    h = lab_harness(LAB)
    h.solve()
    h.write("ca.crt", bytes(range(256)) * 4)
    h.write("admin.key", "")
    h.write("apiserver.crt", (h.workdir / "apiserver.key").read_bytes())
    r = h.grade()
    assert {"test_ca_pair", "test_admin_pair", "test_apiserver_pair"} <= failed_ids(r)
    assert check_of(r, "test_ca_pair").message == (
        "ca.crt is not a certificate: no PEM '-----BEGIN CERTIFICATE-----' block that parses, and not DER "
        "either. Look at it: openssl x509 -in ca.crt -noout -text")
    assert check_of(r, "test_admin_pair").message == "admin.key is empty."
    assert check_of(r, "test_apiserver_pair").message == (
        "apiserver.crt holds a private key (PRIVATE KEY), not a certificate.")


def test_certificate_in_the_key_file_fails(lab_harness):
    h = lab_harness(LAB)
    h.solve()
    h.write("ca.key", (h.workdir / "ca.crt").read_bytes())
    r = h.grade()
    assert check_of(r, "test_ca_pair").message == "ca.key holds a CERTIFICATE, not a private key."


def test_start_twice_equals_once_and_keeps_learner_files(lab_harness):
    h = lab_harness(LAB)
    h.solve()
    before = {p.name: p.read_bytes() for p in h.workdir.iterdir()}
    h.start()
    h.start()
    assert {p.name: p.read_bytes() for p in h.workdir.iterdir()} == before
    assert h.grade().passed


# --- the CA must be a CA; the leaves must not be ------------------------------------------------

CA_LOOK = "Look: openssl x509 -in ca.crt -noout -text | grep -A1 -E 'Version|Basic Constraints|Key Usage'"
NOT_CHECKED_CA = 'Not checked yet: first fix "ca.crt is a CA: basicConstraints CA:TRUE and key usage keyCertSign".'
# The recipe common study material teaches: the CA signs its own request, with no extensions.
SIGNKEY_CA = ('openssl req -new -key ca.key -subj "/CN=KUBERNETES-CA" -out ca.csr\n'
              "openssl x509 -req -in ca.csr -signkey ca.key -days 3650 -out ca.crt")


def remake_ca(h, extensions):
    """ca.crt again from the reference's ca.key (so the leaves still verify), with these extensions."""
    key, old = pki.load_key(h.workdir / "ca.key"), pki.load_cert(h.workdir / "ca.crt")
    b = (x509.CertificateBuilder().subject_name(old.subject).issuer_name(old.subject).public_key(key.public_key())
         .serial_number(x509.random_serial_number()).not_valid_before(old.not_valid_before_utc)
         .not_valid_after(old.not_valid_after_utc))
    for ext, critical in extensions:
        b = b.add_extension(ext, critical=critical)
    h.write("ca.crt", pki.cert_pem(b.sign(key, hashes.SHA256())))


def key_usage(**bits):
    names = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
             "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")
    return x509.KeyUsage(**{n: bits.get(n, False) for n in names})


def openssl_version(binary: str) -> tuple[int, int]:
    out = subprocess.run([binary, "version"], capture_output=True, text=True).stdout
    m = re.match(r"OpenSSL (\d+)\.(\d+)", out)
    return (int(m[1]), int(m[2])) if m else (0, 0)


def grader_module():
    spec = importlib.util.spec_from_file_location("tls_grader", labs.load(LAB).grader)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_ca_made_with_x509_signkey_is_not_a_ca(lab_harness):
    """The study-material recipe: with OpenSSL 3.0 a version 1 certificate; named precisely, and the
    handshake waits for it instead of blaming apiserver.crt."""
    h = lab_harness(LAB)
    h.solve()
    h.sh(SIGNKEY_CA)
    r = h.grade()
    assert failed_ids(r) == {"test_ca_is_ca", "test_tls_handshake"}
    if openssl_version("openssl") < (3, 2):
        assert check_of(r, "test_ca_is_ca").message == (
            "ca.crt is an X.509 version 1 certificate (Version: 1 (0x0)): it carries no extensions, so nothing in it "
            "says it is a CA (no basicConstraints CA:TRUE, no keyCertSign). 'openssl x509 -req -signkey' makes one on "
            "OpenSSL 3.0 when given no extensions. Strict verifiers (openssl verify -x509_strict, Python's "
            "cryptography) refuse it as a CA, and on OpenSSL 3.2+ the same command makes a version 3 certificate "
            f"without CA:TRUE, which even plain openssl verify refuses.\n{CA_LOOK}")
    else:  # 3.2+ writes version 3, without basicConstraints
        assert check_of(r, "test_ca_is_ca").message.startswith("ca.crt has no basicConstraints extension")
    assert check_of(r, "test_tls_handshake").message == NOT_CHECKED_CA


def test_ca_extension_problems_are_each_named(lab_harness):
    h = lab_harness(LAB)
    h.solve()
    ski = (x509.SubjectKeyIdentifier.from_public_key(pki.load_key(h.workdir / "ca.key").public_key()), False)
    cases = {
        (ski,): "ca.crt has no basicConstraints extension, so it does not say it is a CA: a CA certificate carries "
                "basicConstraints CA:TRUE, marked critical.\nca.crt has no keyUsage extension; a CA certificate "
                "lists keyCertSign (Certificate Sign), and strict verifiers refuse a CA without it.",
        ((x509.BasicConstraints(ca=False, path_length=None), True), (key_usage(digital_signature=True), True)):
            "ca.crt has basicConstraints CA:FALSE: it declares itself not a CA, so nothing it signed is trusted.\n"
            "ca.crt's key usage is Digital Signature, without Certificate Sign (keyCertSign): it may not sign "
            "certificates.",
        ((x509.BasicConstraints(ca=True, path_length=None), False), (key_usage(key_cert_sign=True), True)):
            "ca.crt has basicConstraints CA:TRUE but not marked critical; RFC 5280 requires a CA to mark it "
            "critical and strict verifiers refuse it otherwise.",
    }
    for extensions, message in cases.items():
        remake_ca(h, extensions)
        r = h.grade()
        assert failed_ids(r) == {"test_ca_is_ca", "test_tls_handshake"}, r.render()
        assert check_of(r, "test_ca_is_ca").message == f"{message}\n{CA_LOOK}"


def test_handshake_blames_the_ca_when_it_is_not_a_ca(lab_harness):
    """Ordering keeps the handshake from running on a non-CA, but if it does (the function on its own),
    OpenSSL's 'invalid CA certificate' is reported against ca.crt, not apiserver.crt's usages."""
    h = lab_harness(LAB)
    h.solve()
    remake_ca(h, [(x509.SubjectKeyIdentifier.from_public_key(pki.load_key(h.workdir / "ca.key").public_key()),
                   False)])
    with pytest.raises(AssertionError) as err:
        grader_module()._handshake(h.workdir, "kubernetes.default.svc")
    assert str(err.value) == (
        "A client that trusts only ca.crt rejected apiserver.crt when connecting to kubernetes.default.svc, because "
        "ca.crt is not a usable CA (invalid CA certificate), not because of apiserver.crt: ca.crt has no "
        "basicConstraints extension, so it does not say it is a CA: a CA certificate carries basicConstraints "
        "CA:TRUE, marked critical. ca.crt has no keyUsage extension; a CA certificate lists keyCertSign "
        f"(Certificate Sign), and strict verifiers refuse a CA without it. {CA_LOOK}")


def test_leaf_certificates_that_are_cas_fail(lab_harness):
    """An admin certificate carrying CA:TRUE used to pass: its key could issue certificates for anyone."""
    h = lab_harness(LAB)
    h.solve()
    resign_with(h, "admin", "basicConstraints = critical, CA:TRUE\n"
                            "keyUsage = critical, digitalSignature, keyEncipherment, keyCertSign\n")
    resign_with(h, "apiserver", "keyUsage = digitalSignature, cRLSign\nsubjectAltName = DNS:kubernetes, "
                "DNS:kubernetes.default, DNS:kubernetes.default.svc, DNS:kubernetes.default.svc.cluster.local, "
                "IP:10.96.0.1, IP:172.17.0.87\n")
    r = h.grade()
    assert failed_ids(r) == {"test_leaves_not_ca"}
    assert check_of(r, "test_leaves_not_ca").message == (
        "admin.crt has basicConstraints CA:TRUE: a client certificate must not be a CA. It is signed by ca.crt, "
        "so whoever holds admin.key could issue certificates for any name or group that everything trusting "
        "ca.crt would accept.\n"
        "admin.crt has the key usage Digital Signature, Key Encipherment, Certificate Sign: signing certificates "
        "or CRLs is for a CA, not for a client certificate.\n"
        "apiserver.crt has the key usage Digital Signature, CRL Sign: signing certificates or CRLs is for a CA, "
        "not for a server certificate.\n"
        "Look: openssl x509 -in admin.crt -noout -ext basicConstraints,keyUsage; "
        "openssl x509 -in apiserver.crt -noout -ext basicConstraints,keyUsage")


def _strict_verify(workdir):
    """cryptography's RFC 5280 path validation, independent of the openssl on PATH: the CA must carry
    critical basicConstraints CA:TRUE and keyCertSign (webpki CA profile). Client certificates have no
    SAN, so the end-entity profile is relaxed for them."""
    ca = pki.load_cert(workdir / "ca.crt")
    store = xv.Store([ca])
    relaxed = xv.PolicyBuilder().store(store).extension_policies(
        ca_policy=xv.ExtensionPolicy.webpki_defaults_ca(), ee_policy=xv.ExtensionPolicy.permit_all())
    relaxed.build_client_verifier().verify(pki.load_cert(workdir / "admin.crt"), [])
    server = xv.PolicyBuilder().store(store).build_server_verifier(xv.DNSName("kubernetes.default.svc"))
    server.verify(pki.load_cert(workdir / "apiserver.crt"), [])


def test_reference_ca_recipe_passes_a_strict_verifier_and_signkey_does_not(lab_harness):
    h = lab_harness(LAB)
    h.solve()
    _strict_verify(h.workdir)
    h.sh(SIGNKEY_CA)
    with pytest.raises(xv.VerificationError):
        _strict_verify(h.workdir)


def test_recipe_with_openssl_3_2_or_later(lab_harness, monkeypatch):
    """The reference solution run by an OpenSSL 3.2+ command line (CKALAB_OPENSSL: its path), which
    writes version 3 certificates: the reference passes the grader and that openssl's verify, and the
    x509 -signkey CA is refused by both. Debian 12 ships 3.0; one way to get a 3.2+ binary is to
    build the OpenSSL sources that the openssl-src crate (crates.io) carries, with `make build_programs`."""
    binary = os.environ.get("CKALAB_OPENSSL") or shutil.which("openssl")
    if not binary or openssl_version(binary) < (3, 2):
        pytest.skip("no OpenSSL 3.2+ command line (set CKALAB_OPENSSL to one)")
    monkeypatch.setenv("PATH", f"{os.path.dirname(os.path.abspath(binary))}{os.pathsep}{os.environ['PATH']}")
    h = lab_harness(LAB)
    assert openssl_version(h.sh("command -v openssl").stdout.strip()) >= (3, 2)
    h.solve()
    r = h.grade()
    assert r.passed, r.render()
    assert h.sh("openssl verify -CAfile ca.crt admin.crt apiserver.crt").returncode == 0
    _strict_verify(h.workdir)
    h.sh(SIGNKEY_CA)
    assert "Version: 3" in h.sh("openssl x509 -in ca.crt -noout -text").stdout
    refused = h.sh("openssl verify -CAfile ca.crt admin.crt", check=False)
    assert refused.returncode != 0 and "invalid CA certificate" in refused.stdout + refused.stderr
    assert check_of(h.grade(), "test_ca_is_ca").message.startswith("ca.crt has no basicConstraints extension")
