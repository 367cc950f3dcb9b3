"""A development certificate authority for C2PA signing: root -> intermediate -> leaf, ES256 (P-256).

Why three levels: c2pa-rs rejects self-signed signing certificates and validates the chain up to a configured
trust anchor, so the service signs with a leaf, ships leaf + intermediate in the manifest (chain.pem) and
readers trust the root. The leaf carries what the C2PA certificate profile asks for: critical KeyUsage
digitalSignature, an EKU from the allowed list (emailProtection, documentSigning), SKI and AKI. Production
deployments bring their own chain and key instead (see `safeguards.provenance.Signer.from_files`).
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from safeguards.errors import CertificateAuthorityExists

__all__ = ["CA_FILES", "DOCUMENT_SIGNING_OID", "DevCA", "create_dev_ca"]

# id-kp-documentSigning (RFC 9336); c2pa-rs lists it among the EKUs a C2PA signer may carry.
DOCUMENT_SIGNING_OID = x509.ObjectIdentifier("1.3.6.1.5.5.7.3.36")
CA_FILES = ("root.pem", "intermediate.pem", "signer.pem", "signer.key", "chain.pem")
_ROOT_KEY = "root.key"
_INTERMEDIATE_KEY = "intermediate.key"


@dataclass(frozen=True)
class DevCA:
    """Paths of a development CA on disk.

    `chain` (leaf + intermediate) and `signer_key` make a Signer; `root` is the readers' trust anchor.
    """

    directory: Path
    root: Path
    intermediate: Path
    signer_cert: Path
    signer_key: Path
    chain: Path

    @classmethod
    def at(cls, directory: Path) -> DevCA:
        d = Path(directory)
        return cls(
            d, d / "root.pem", d / "intermediate.pem", d / "signer.pem", d / "signer.key", d / "chain.pem"
        )

    def root_pem(self) -> str:
        return self.root.read_text()


def _name(organization: str, common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, *, days: int
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _ca_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=False,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=True,
        encipher_only=False,
        decipher_only=False,
    )


def _signing_usage() -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def _write(path: Path, data: bytes, *, secret: bool) -> None:
    """Write atomically; secrets are created 0600 from the start (never world-readable, not even briefly)."""
    tmp = path.with_name(path.name + ".tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(tmp, flags, 0o600 if secret else 0o644)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o600 if secret else 0o644)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def create_dev_ca(
    pki_dir: Path,
    *,
    organization: str = "provatar dev",
    overwrite: bool = False,
    leaf_days: int = 825,
) -> DevCA:
    """Create root, intermediate and signing leaf under `pki_dir` and return their paths.

    Refuses (CertificateAuthorityExists) when any CA file is already there, unless `overwrite=True`, so
    running `provatar init` twice never invalidates manifests signed with the first CA. Keys are written 0600.
    """
    directory = Path(pki_dir)
    ca = DevCA.at(directory)
    existing = [n for n in (*CA_FILES, _ROOT_KEY, _INTERMEDIATE_KEY) if (directory / n).exists()]
    if existing and not overwrite:
        raise CertificateAuthorityExists(
            f"a CA already exists in {directory} ({', '.join(existing)}); pass overwrite=True to replace it "
            "(manifests signed with the old CA will no longer be trusted)"
        )
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)

    root_key = ec.generate_private_key(ec.SECP256R1())
    root_name = _name(organization, f"{organization} root CA")
    root = (
        _builder(root_name, root_name, root_key.public_key(), days=3650)
        .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
        .add_extension(_ca_usage(), critical=True)
        .sign(root_key, hashes.SHA256())
    )

    inter_key = ec.generate_private_key(ec.SECP256R1())
    inter_name = _name(organization, f"{organization} intermediate CA")
    intermediate = (
        _builder(inter_name, root_name, inter_key.public_key(), days=1825)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ca_usage(), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False
        )
        .sign(root_key, hashes.SHA256())
    )

    leaf_key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        _builder(
            _name(organization, f"{organization} C2PA signer"),
            inter_name,
            leaf_key.public_key(),
            days=leaf_days,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_signing_usage(), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION, DOCUMENT_SIGNING_OID]),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(inter_key.public_key()), critical=False
        )
        .sign(inter_key, hashes.SHA256())
    )

    pem = serialization.Encoding.PEM
    _write(directory / _ROOT_KEY, _key_pem(root_key), secret=True)
    _write(directory / _INTERMEDIATE_KEY, _key_pem(inter_key), secret=True)
    _write(ca.signer_key, _key_pem(leaf_key), secret=True)
    _write(ca.root, root.public_bytes(pem), secret=False)
    _write(ca.intermediate, intermediate.public_bytes(pem), secret=False)
    _write(ca.signer_cert, leaf.public_bytes(pem), secret=False)
    _write(ca.chain, leaf.public_bytes(pem) + intermediate.public_bytes(pem), secret=False)
    return ca
