"""Certificate helpers shared by the local backend's PKI and by the graders.

Written with `cryptography` so nothing depends on the openssl binary; the graders use the
same functions to read what learners produce with openssl.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .home import write_atomic

CLIENT_AUTH = ExtendedKeyUsageOID.CLIENT_AUTH
SERVER_AUTH = ExtendedKeyUsageOID.SERVER_AUTH


def new_key(bits: int = 2048) -> rsa.RSAPrivateKey:
    """kubeadm's default key type: RSA 2048."""
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def name(cn: str, orgs: tuple[str, ...] | list[str] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def make_ca(cn: str, days: int = 3650, key: rsa.RSAPrivateKey | None = None):
    """Self-signed CA as kubeadm makes it: CA:TRUE, keyCertSign, 10 years."""
    key = key or new_key()
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name(cn))
        .issuer_name(name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _key_usage(cert_sign: bool = False) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True, key_encipherment=True, key_cert_sign=cert_sign,
        content_commitment=False, data_encipherment=False, key_agreement=False,
        crl_sign=False, encipher_only=False, decipher_only=False,
    )


def sign(
    ca_key, ca_cert: x509.Certificate, cn: str, *, orgs=(), usages=(CLIENT_AUTH,),
    dns=(), ips=(), days: int = 365, key=None,
):
    """Leaf certificate signed by a CA, with kubeadm's key usages and extended usages."""
    key = key or new_key()
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(name(cn, orgs))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(), critical=True)
        .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), critical=False
        )
    )
    sans = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


# --- files -----------------------------------------------------------------------------------

def key_pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def public_pem(key) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def write_pair(directory: Path, base: str, key, cert: x509.Certificate) -> None:
    """Write base.key (0600) and base.crt, the names kubeadm uses under /etc/kubernetes/pki."""
    write_atomic(directory / f"{base}.key", key_pem(key), private=True)  # 0600 from the first byte
    write_atomic(directory / f"{base}.crt", cert_pem(cert))


def load_cert(data: bytes | str | Path) -> x509.Certificate:
    """Load a PEM (or DER) certificate from bytes or a path."""
    raw = Path(data).read_bytes() if isinstance(data, (str, Path)) else data
    if b"-----BEGIN" in raw:
        return x509.load_pem_x509_certificate(raw)
    return x509.load_der_x509_certificate(raw)


def load_key(data: bytes | str | Path, own: bool = False):
    """Load a PEM private key. `own`: a key ckalab made itself (its cluster CAs), loaded at every
    `up`: cryptography's RSA consistency checks (about 40 ms a key) are skipped for it. Keys from
    anyone else, a learner's above all, are always checked."""
    raw = Path(data).read_bytes() if isinstance(data, (str, Path)) else data
    return serialization.load_pem_private_key(raw, password=None, unsafe_skip_rsa_key_validation=own)


def make_csr(key, cn: str, orgs=()) -> x509.CertificateSigningRequest:
    return x509.CertificateSigningRequestBuilder().subject_name(name(cn, orgs)).sign(key, hashes.SHA256())


def csr_pem(csr: x509.CertificateSigningRequest) -> bytes:
    return csr.public_bytes(serialization.Encoding.PEM)


# --- inspection ------------------------------------------------------------------------------

def key_matches(key, cert: x509.Certificate) -> bool:
    """True when the private key belongs to the certificate's public key."""
    return public_pem(key) == cert.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True when `issuer`'s public key verifies `cert`'s signature (and the names chain)."""
    if cert.issuer != issuer.subject:
        return False
    pub = issuer.public_key()
    try:
        if isinstance(pub, rsa.RSAPublicKey):
            pub.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(),
                       cert.signature_hash_algorithm)
        elif isinstance(pub, ec.EllipticCurvePublicKey):
            pub.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
        else:
            pub.verify(cert.signature, cert.tbs_certificate_bytes)
    except (InvalidSignature, TypeError, ValueError):
        return False
    return True


def _attr(n: x509.Name, oid) -> list[str]:
    return [a.value for a in n.get_attributes_for_oid(oid)]


@dataclass
class CertInfo:
    """What `openssl x509 -noout -text` shows, as plain values."""

    subject_cn: str
    subject_orgs: list[str]
    issuer_cn: str
    dns_names: list[str] = field(default_factory=list)
    ip_addresses: list[str] = field(default_factory=list)
    not_before: dt.datetime | None = None
    not_after: dt.datetime | None = None
    is_ca: bool = False
    ext_usages: list[str] = field(default_factory=list)
    key_bits: int | None = None

    @property
    def sans(self) -> set[str]:
        return {f"DNS:{d}" for d in self.dns_names} | {f"IP:{i}" for i in self.ip_addresses}


_EKU_NAMES = {CLIENT_AUTH: "client auth", SERVER_AUTH: "server auth"}


def describe(cert: x509.Certificate) -> CertInfo:
    info = CertInfo(
        subject_cn=", ".join(_attr(cert.subject, NameOID.COMMON_NAME)),
        subject_orgs=_attr(cert.subject, NameOID.ORGANIZATION_NAME),
        issuer_cn=", ".join(_attr(cert.issuer, NameOID.COMMON_NAME)),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
    )
    exts = cert.extensions
    try:
        san = exts.get_extension_for_class(x509.SubjectAlternativeName).value
        info.dns_names = san.get_values_for_type(x509.DNSName)
        info.ip_addresses = [str(i) for i in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        pass
    try:
        info.is_ca = exts.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        pass
    try:
        eku = exts.get_extension_for_class(x509.ExtendedKeyUsage).value
        info.ext_usages = [_EKU_NAMES.get(u, u.dotted_string) for u in eku]
    except x509.ExtensionNotFound:
        pass
    pub = cert.public_key()
    info.key_bits = getattr(pub, "key_size", None)
    return info
