"""A fleet's own certificate authority and the certificates it issues (``broker-config
--tls-ca-cert``), on the ``cryptography`` library: EC P-256 keys, the subject's common name the
connection's identity (a node's client id, the host user, the broker's address).

A client certificate's common name is what Mosquitto takes as the user name on a listener with
``use_identity_as_username true``, so that the ACL's per-node rules hold for whoever holds the
node's key. Keys are written mode 0600.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
LEAF_DAYS = 825


@dataclass(frozen=True)
class Authority:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    created: bool = False


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    os.chmod(path, 0o600)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def load_or_create_ca(cert_path: Path, key_path: Path, common_name: str) -> Authority:
    """The CA in ``cert_path`` and ``key_path``, or a new one written there when neither exists;
    ValueError names a file missing of the pair, one that does not load, or a key that is not the
    certificate's."""
    have_cert, have_key = cert_path.exists(), key_path.exists()
    if not have_cert and not have_key:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(_name(common_name))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        _write_key(key_path, key)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return Authority(cert, key, created=True)
    if not (have_cert and have_key):
        there, missing = (cert_path, key_path) if have_cert else (key_path, cert_path)
        raise ValueError(f"the fleet CA: {there} exists, {missing} does not (give both, or neither to create them)")
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except ValueError:
        raise ValueError(f"--tls-ca-cert {cert_path}: not a PEM certificate") from None
    try:
        loaded = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (ValueError, TypeError):
        raise ValueError(f"--tls-ca-key {key_path}: not an unencrypted PEM private key") from None
    if not isinstance(loaded, ec.EllipticCurvePrivateKey):
        raise ValueError(f"--tls-ca-key {key_path}: an EC key is expected (as broker-config creates)")
    key = loaded
    pub = serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(*pub) != cert.public_key().public_bytes(*pub):
        raise ValueError(f"--tls-ca-key {key_path} is not the key of --tls-ca-cert {cert_path}")
    return Authority(cert, key)


def alt_name(name: str) -> x509.GeneralName:
    """A subject alternative name: an IP address, or a DNS name; ValueError for anything else."""
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        pass
    if not name or not name.isascii() or any(c.isspace() or c in "/:@[]" for c in name):
        raise ValueError(f"{name!r}: neither an IP address nor a host name")
    return x509.DNSName(name)


def issue(
    ca: Authority,
    common_name: str,
    cert_path: Path,
    key_path: Path,
    *,
    server: bool = False,
    alt_names: Sequence[str] = (),
) -> None:
    """A certificate for ``common_name`` signed by ``ca`` and its new key, written to the two
    paths. ``server``: a server's (the broker's, the Redfish service's), for the address (an IP
    address or a host name) it is reached at and any of ``alt_names`` (each a subject alternative
    name); ValueError for a name that is neither."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=LEAF_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
    )
    if server:
        alts = [alt_name(n) for n in dict.fromkeys([common_name, *alt_names])]
        builder = builder.add_extension(x509.SubjectAlternativeName(alts), critical=False)
    cert = builder.sign(ca.key, hashes.SHA256())
    _write_key(key_path, key)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
