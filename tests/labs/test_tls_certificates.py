"""tls-certificates grader: the openssl reference and other correct forms pass; each erratum and
each malformed file fails the right check with a pinned message."""

import datetime as dt

from conftest import check_of, failed_ids
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from ckalab import labs, pki

LAB = "tls-certificates"
ALL = {"test_ca_pair", "test_admin_pair", "test_apiserver_pair", "test_ca_subject", "test_admin_subject",
       "test_apiserver_subject", "test_ca_self_signed", "test_admin_signed", "test_apiserver_signed",
       "test_apiserver_sans", "test_not_expired", "test_tls_handshake"}

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
    assert r.score == r.max_score == 19


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
openssl req -x509 -new -key ca.key -subj "/CN=KUBERNETES-CA" -days 365 -out ca.crt
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
        "so it is not the group 'system:masters' and grants nothing. Write the subject without spaces: "
        '-subj "/CN=kube-admin/O=system:masters"')


def test_space_before_attribute_drops_the_group(lab_harness):
    h = lab_harness(LAB)
    h.solve()
    h.sh('openssl req -new -key admin.key -subj "/CN=kube-admin/ O=system:masters" -out admin.csr\n'
         + SIGN.format(b="admin"))
    r = h.grade()
    assert failed_ids(r) == {"test_admin_subject"}
    assert check_of(r, "test_admin_subject").message == (
        "admin.crt has the subject /CN=kube-admin: no group (O). Expected O=system:masters: "
        "-subj \"/CN=kube-admin/O=system:masters\" (openssl skips an attribute written as '/ O=').")


def test_admin_made_by_a_second_req_is_self_signed_and_fails(lab_harness):
    h = lab_harness(LAB)
    h.solve()
    h.sh('openssl req -new -x509 -key admin.key -subj "/CN=kube-admin/O=system:masters" -out admin.crt')
    r = h.grade()
    assert failed_ids(r) == {"test_admin_signed", "test_tls_handshake"}
    assert check_of(r, "test_admin_signed").message == (
        "admin.crt is self-signed (issuer /CN=kube-admin/O=system:masters is its own subject), so nothing "
        "trusts it. A second 'openssl req' does not sign anything; the CA signs the request: "
        "openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out admin.crt")
    assert check_of(r, "test_tls_handshake").message == 'Not checked yet: first fix "admin.crt is signed by the CA".'


def test_csr_saved_as_certificate_fails(lab_harness):
    h = lab_harness(LAB)
    h.solve()
    h.sh('openssl req -new -key admin.key -subj "/CN=kube-admin/O=system:masters" -out admin.crt')
    r = h.grade()
    assert check_of(r, "test_admin_pair").message == (
        "admin.crt holds a certificate signing request, not a certificate: sign it, e.g. "
        "openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out admin.crt")


def test_signed_by_an_older_ca_fails(lab_harness):
    h = lab_harness(LAB)
    h.solve()
    h.sh('openssl genrsa -out ca.key 2048\nopenssl req -x509 -new -key ca.key -subj "/CN=KUBERNETES-CA" -out ca.crt')
    r = h.grade()
    assert failed_ids(r) == {"test_admin_signed", "test_apiserver_signed", "test_tls_handshake"}
    assert check_of(r, "test_apiserver_signed").message == (
        "apiserver.crt names /CN=KUBERNETES-CA as its issuer, but ca.crt's public key does not verify its "
        "signature: it was signed by another CA key (were ca.key and ca.crt made again afterwards?). "
        "Sign it again: openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial "
        "-out apiserver.crt")


def test_signing_without_extfile_loses_the_sans(lab_harness):
    h = lab_harness(LAB)
    h.solve()
    h.sh(SIGN.format(b="apiserver"))  # the request has the SANs, but x509 -req drops them
    r = h.grade()
    assert failed_ids(r) == {"test_apiserver_sans", "test_tls_handshake"}
    assert check_of(r, "test_apiserver_sans").message == (
        "apiserver.crt has no subjectAltName extension. 'openssl x509 -req' does not copy the request's "
        "extensions: pass the config file when signing (-extfile openssl.cnf -extensions v3_req).")


def test_missing_and_misfiled_sans_are_listed(lab_harness):
    h = lab_harness(LAB)
    h.solve()
    resign_apiserver(h, "DNS:kubernetes, DNS:kubernetes.default, DNS:kubernetes.default.svc, "
                        "DNS:10.96.0.1, IP:172.17.0.78")
    r = h.grade()
    assert failed_ids(r) == {"test_apiserver_sans", "test_tls_handshake"}
    assert check_of(r, "test_apiserver_sans").message == (
        "apiserver.crt lacks the SANs DNS:kubernetes.default.svc.cluster.local, IP:10.96.0.1, IP:172.17.0.87. "
        "It has these instead: DNS:10.96.0.1, IP:172.17.0.78. An address must be an IP entry (IP.1 = 10.96.0.1), "
        "not a DNS entry. Look: openssl x509 -in apiserver.crt -noout -ext subjectAltName")


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
         "openssl req -new -key apiserver.key -subj /CN=kube-apiserver -config openssl.cnf -out apiserver.csr\n"
         + SIGN.format(b="apiserver") + " -extfile openssl.cnf -extensions v3_req")
    r = h.grade()
    assert failed_ids(r) >= {"test_apiserver_pair"}
    assert check_of(r, "test_apiserver_pair").message == (
        "apiserver.key is RSA 1024 bits; at least 2048 are needed: openssl genrsa -out apiserver.key 2048, "
        "then make apiserver.crt again.")


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
        "admin.crt expired on 2021-01-01 00:00 UTC. Make it again with a validity that covers today "
        "(openssl x509 -days N).")


def test_server_only_usage_on_the_client_cert_fails_the_handshake(lab_harness):
    h = lab_harness(LAB)
    h.solve()
    h.write("eku.cnf", "[v3]\nextendedKeyUsage = serverAuth\n")
    h.sh(SIGN.format(b="admin") + " -extfile eku.cnf -extensions v3")
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
