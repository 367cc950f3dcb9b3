"""Provenance: dev CA, signing an MP4 with the provatar manifest, reading it back against trust anchors."""

from __future__ import annotations

import json
import shutil
import stat
import struct
from pathlib import Path

import av
import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from safeguards.errors import (
    CertificateAuthorityExists,
    SignerConfigError,
    SigningFailed,
    UnsupportedMedia,
)
from safeguards.pki import DevCA, create_dev_ca
from safeguards.provenance import (
    GENERATION_ASSERTION,
    TRAINED_ALGORITHMIC_MEDIA,
    ManifestSpec,
    Signer,
    read_provenance,
    sign_mp4,
    trust_bundle,
)
from safeguards.watermark import WATERMARK_ALGORITHM, WatermarkPayload


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> DevCA:
    return create_dev_ca(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny H.264 MP4 made with PyAV (1 s, 64x64)."""
    path = tmp_path_factory.mktemp("media") / "clip.mp4"
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for _ in range(25):
            frame = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


def _spec(example_photo: Path, example_audio: Path, **overrides: object) -> ManifestSpec:
    payload = WatermarkPayload.for_generation(bytes(32), 0x01020304)
    fields: dict[str, object] = {
        "title": "out.mp4",
        "generation_id": "gen_123",
        "policy_decision_id": "dec_456",
        "consent_record_id": "consent_789",
        "policy_version": "2025.1",
        "watermark_algorithm": WATERMARK_ALGORITHM,
        "watermark_payload_hex": payload.to_hex(),
        "software_version": "0.1.0",
        "photo_path": example_photo,
        "audio_path": example_audio,
    }
    fields.update(overrides)
    return ManifestSpec(**fields)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def signed(
    ca: DevCA, clip: Path, example_photo: Path, example_audio: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    out = tmp_path_factory.mktemp("signed") / "signed.mp4"
    with Signer.from_files(ca.chain, ca.signer_key) as signer:
        sign_mp4(clip, out, signer=signer, manifest=_spec(example_photo, example_audio))
    return out


# --- dev CA ---------------------------------------------------------------------------------------


def test_dev_ca_files_chain_and_modes(ca: DevCA) -> None:
    for path in (ca.root, ca.intermediate, ca.signer_cert, ca.signer_key, ca.chain):
        assert path.is_file()
    assert stat.S_IMODE(ca.signer_key.stat().st_mode) == 0o600
    for key_file in ca.directory.glob("*.key"):
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600, key_file.name
    root = x509.load_pem_x509_certificate(ca.root.read_bytes())
    inter = x509.load_pem_x509_certificate(ca.intermediate.read_bytes())
    leaf = x509.load_pem_x509_certificate(ca.signer_cert.read_bytes())
    leaf.verify_directly_issued_by(inter)
    inter.verify_directly_issued_by(root)
    assert leaf.issuer != leaf.subject
    assert isinstance(leaf.public_key(), ec.EllipticCurvePublicKey)
    assert leaf.public_key().curve.name == "secp256r1"  # type: ignore[union-attr]
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and not usage.value.key_cert_sign
    assert (
        ExtendedKeyUsageOID.EMAIL_PROTECTION
        in leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    )
    leaf.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    leaf.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier)
    chain = x509.load_pem_x509_certificates(ca.chain.read_bytes())
    assert [c.subject for c in chain] == [leaf.subject, inter.subject]


def test_dev_ca_refuses_to_overwrite(ca: DevCA, tmp_path: Path) -> None:
    before = ca.root.read_bytes()
    with pytest.raises(CertificateAuthorityExists) as info:
        create_dev_ca(ca.directory)
    assert info.value.code == "ca_exists"
    assert ca.root.read_bytes() == before
    copy = tmp_path / "pki"
    shutil.copytree(ca.directory, copy)
    replaced = create_dev_ca(copy, overwrite=True)
    assert replaced.root.read_bytes() != before


# --- sign and read --------------------------------------------------------------------------------


def test_signed_mp4_is_trusted_with_root_anchor(signed: Path, ca: DevCA) -> None:
    report = read_provenance(signed, trust_anchors_pem=ca.root.read_text())
    assert report.present and report.state == "Trusted", report.errors
    assert report.ai_generated
    assert report.generation_id == "gen_123"
    assert report.signer and "provatar dev" in report.signer
    assert report.errors == []
    assert report.assertions[GENERATION_ASSERTION] == {
        "generation_id": "gen_123",
        "policy_decision_id": "dec_456",
        "consent_record_id": "consent_789",
        "policy_version": "2025.1",
    }


def test_manifest_content(signed: Path, ca: DevCA) -> None:
    report = read_provenance(signed, trust_anchors_pem=ca.root.read_text())
    actions = next(v for k, v in report.assertions.items() if k.startswith("c2pa.actions"))["actions"]
    created = next(a for a in actions if a["action"] == "c2pa.created")
    assert created["digitalSourceType"] == TRAINED_ALGORITHMIC_MEDIA
    assert created["softwareAgent"] == {"name": "provatar", "version": "0.1.0"}
    marked = next(a for a in actions if a["action"] == "c2pa.watermarked.bound")  # C2PA 2.1+
    assert marked["parameters"]["algorithm"] == WATERMARK_ALGORITHM
    assert marked["parameters"]["payload"] == WatermarkPayload.for_generation(bytes(32), 0x01020304).to_hex()
    assert report.assertions["c2pa.soft-binding"]["alg"] == WATERMARK_ALGORITHM
    assert WATERMARK_ALGORITHM.endswith(".v3")  # bumped with the scale-robust scheme
    entries = report.assertions["cawg.training-mining"]["entries"]
    assert entries and all(e["use"] == "notAllowed" for e in entries.values())
    store = json.loads(report.manifest_json or "{}")
    active = store["manifests"][store["active_manifest"]]
    ingredients = active["ingredients"]
    assert sorted(i["title"] for i in ingredients) == [
        "astronaut_eileen_collins.png",
        "ljspeech_LJ001-0001.wav",
    ]
    assert all(i["relationship"] == "inputTo" for i in ingredients)
    assert all("thumbnail" not in i for i in ingredients)
    # No personal data: the manifest names no subject, only ids.
    assert "subject" not in json.dumps(report.assertions[GENERATION_ASSERTION])


def test_without_anchor_valid_but_not_trusted(signed: Path) -> None:
    report = read_provenance(signed, trust_anchors_pem=None)
    assert report.present and report.state == "Valid"


def _mdat_offset(path: Path) -> int:
    """File offset of the first byte of the mdat payload (walks top-level MP4 boxes)."""
    data = path.read_bytes()
    pos = 0
    while pos + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[pos : pos + 8])
        header = 8
        if size == 1:
            size = struct.unpack(">Q", data[pos + 8 : pos + 16])[0]
            header = 16
        if kind == b"mdat":
            return pos + header
        pos += size
    raise AssertionError("no mdat box")


def test_one_flipped_video_byte_is_invalid(signed: Path, ca: DevCA, tmp_path: Path) -> None:
    tampered = tmp_path / "tampered.mp4"
    data = bytearray(signed.read_bytes())
    data[_mdat_offset(signed) + 100] ^= 0x01
    tampered.write_bytes(bytes(data))
    report = read_provenance(tampered, trust_anchors_pem=ca.root.read_text())
    assert report.present and report.state == "Invalid"
    assert report.errors and any("mismatch" in e or "hash" in e for e in report.errors)


def test_no_manifest_is_absent_not_an_error(clip: Path, ca: DevCA) -> None:
    report = read_provenance(clip, trust_anchors_pem=ca.root.read_text())
    assert not report.present and report.state is None and report.errors == []


def test_corrupt_file_raises_typed_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00\x00\x00\x10ftypjunk" + bytes(range(256)) * 4)
    with pytest.raises(UnsupportedMedia) as info:
        read_provenance(junk, trust_anchors_pem=None)
    assert info.value.code == "unsupported_media"


def test_other_ca_is_not_trusted(
    signed: Path, clip: Path, example_photo: Path, example_audio: Path, tmp_path: Path, ca: DevCA
) -> None:
    other = create_dev_ca(tmp_path / "other", organization="someone else")
    out = tmp_path / "other.mp4"
    with Signer.from_dev_ca(other) as signer:
        sign_mp4(clip, out, signer=signer, manifest=_spec(example_photo, example_audio))
    report = read_provenance(out, trust_anchors_pem=ca.root.read_text())
    assert report.present and report.state != "Trusted"
    assert read_provenance(out, trust_anchors_pem=other.root.read_text()).state == "Trusted"


def test_callback_signer_kms_style(
    ca: DevCA, clip: Path, example_photo: Path, example_audio: Path, tmp_path: Path
) -> None:
    key = serialization.load_pem_private_key(ca.signer_key.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    calls: list[int] = []

    def kms_sign(data: bytes) -> bytes:  # returns DER, like AWS KMS / Cloud KMS
        calls.append(len(data))
        return key.sign(data, ec.ECDSA(hashes.SHA256()))

    out = tmp_path / "kms.mp4"
    with Signer.from_callback(kms_sign, ca.chain.read_text()) as signer:
        assert signer.alg == "es256"
        sign_mp4(clip, out, signer=signer, manifest=_spec(example_photo, example_audio))
    assert calls
    assert read_provenance(out, trust_anchors_pem=ca.root.read_text()).state == "Trusted"


def test_ingredient_without_c2pa_support_is_described(
    ca: DevCA, clip: Path, example_photo: Path, tmp_path: Path
) -> None:
    audio = tmp_path / "upload_audio"  # stored without extension, unknown bytes
    audio.write_bytes(b"not a known container" * 10)
    out = tmp_path / "described.mp4"
    with Signer.from_dev_ca(ca) as signer:
        sign_mp4(clip, out, signer=signer, manifest=_spec(example_photo, audio))
    report = read_provenance(out, trust_anchors_pem=ca.root.read_text())
    assert report.state == "Trusted"
    store = json.loads(report.manifest_json or "{}")
    titles = [i["title"] for i in store["manifests"][store["active_manifest"]]["ingredients"]]
    assert "upload_audio" in titles


# --- failures -------------------------------------------------------------------------------------


def test_signer_rejects_mismatched_key_and_self_signed_leaf(ca: DevCA, tmp_path: Path) -> None:
    other = create_dev_ca(tmp_path / "mismatch")
    with pytest.raises(SignerConfigError) as info:
        Signer.from_files(ca.chain, other.signer_key)
    assert info.value.code == "signer_config_invalid"
    with pytest.raises(SignerConfigError):
        Signer.from_files(ca.root, tmp_path / "missing.key")
    root_key = tmp_path / "root.key"
    shutil.copy(ca.directory / "root.key", root_key)
    with pytest.raises(SignerConfigError):  # the root is self-signed: C2PA refuses it as a signing cert
        Signer.from_files(ca.root, root_key)
    with pytest.raises(SignerConfigError):
        Signer.from_files(ca.chain, ca.signer_key, tsa_url="ftp://tsa.example")


def test_sign_failure_leaves_no_partial_file(
    ca: DevCA, example_photo: Path, example_audio: Path, tmp_path: Path
) -> None:
    not_video = tmp_path / "broken.mp4"
    not_video.write_bytes(b"\x00" * 512)
    out = tmp_path / "out.mp4"
    with Signer.from_dev_ca(ca) as signer, pytest.raises(SigningFailed) as info:
        sign_mp4(not_video, out, signer=signer, manifest=_spec(example_photo, example_audio))
    assert info.value.code == "signing_failed"
    assert list(tmp_path.iterdir()) == [not_video]


# --- manifests from other signers, trust list -----------------------------------------------------------------


def _foreign_ca(directory: Path) -> tuple[Path, Path, Path]:
    """Another organisation's CA, built here (root -> leaf, P-384): (root.pem, chain.pem, leaf.key)."""
    import datetime as dt

    from cryptography.x509.oid import NameOID

    from safeguards.pki import DOCUMENT_SIGNING_OID

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Elsewhere Media Lab"),
                          x509.NameAttribute(NameOID.COMMON_NAME, cn)])  # fmt: skip

    now = dt.datetime.now(dt.UTC)
    root_key, leaf_key = ec.generate_private_key(ec.SECP384R1()), ec.generate_private_key(ec.SECP384R1())
    root = (
        x509.CertificateBuilder().subject_name(name("Elsewhere root")).issuer_name(name("Elsewhere root"))
        .public_key(root_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(root_key.public_key()), critical=False)
        .sign(root_key, hashes.SHA384())
    )  # fmt: skip
    leaf = (
        x509.CertificateBuilder().subject_name(name("Elsewhere C2PA signer")).issuer_name(root.subject)
        .public_key(leaf_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION, DOCUMENT_SIGNING_OID]), False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(leaf_key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(root_key.public_key()), critical=False)
        .sign(root_key, hashes.SHA384())
    )  # fmt: skip
    directory.mkdir(parents=True, exist_ok=True)
    pem = serialization.Encoding.PEM
    (directory / "root.pem").write_bytes(root.public_bytes(pem))
    (directory / "chain.pem").write_bytes(leaf.public_bytes(pem) + root.public_bytes(pem))
    (directory / "leaf.key").write_bytes(
        leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return directory / "root.pem", directory / "chain.pem", directory / "leaf.key"


def _foreign_signed_jpeg(tmp_path: Path, example_photo: Path, source_type: str) -> tuple[Path, Path]:
    """A JPEG whose manifest another tool wrote and signed with its own CA: (file, that CA's root.pem)."""
    import c2pa
    from PIL import Image

    root, chain, key = _foreign_ca(tmp_path / "elsewhere")
    src = tmp_path / "input.jpg"
    Image.open(example_photo).convert("RGB").resize((128, 128)).save(src, quality=90)
    definition = {
        "claim_generator_info": [{"name": "ElsewhereStudio", "version": "7.2"}],
        "title": "portrait.jpg",
        "format": "image/jpeg",
        "assertions": [{"label": "c2pa.actions", "data": {"actions": [
            {"action": "c2pa.created", "digitalSourceType": source_type},
        ]}}],
    }  # fmt: skip
    out = tmp_path / "foreign.jpg"
    with Signer.from_files(chain, key) as signer, c2pa.Builder(definition) as builder:
        assert signer.alg == "es384"
        with src.open("rb") as source, out.open("w+b") as dest:
            builder.sign(signer.native, "image/jpeg", source, dest)
    return out, root


def test_foreign_manifest_is_reported_and_trusted_only_once_its_root_is_listed(
    ca: DevCA, signed: Path, example_photo: Path, tmp_path: Path
) -> None:
    composite = "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"
    foreign, foreign_root = _foreign_signed_jpeg(tmp_path, example_photo, composite)
    ours = trust_bundle(ca.root.read_text(), None)
    report = read_provenance(foreign, trust_anchors_pem=ours)
    assert report.present and report.state == "Valid" and not report.trusted
    assert report.signer == "Elsewhere C2PA signer" and report.signer_issuer == "Elsewhere Media Lab"
    assert report.claim_generator == "ElsewhereStudio/7.2"
    assert report.ai_generated and report.ai_assertions == ["c2pa.created: compositeWithTrainedAlgorithmicMedia"]
    assert report.generation_id is None and report.errors == []
    assert len(report.trust_list) == 1 and "provatar dev root CA" in report.trust_list[0]

    extended = trust_bundle(ca.root.read_text(), foreign_root.read_text())
    trusted = read_provenance(foreign, trust_anchors_pem=extended)
    assert trusted.state == "Trusted" and trusted.trusted
    assert len(trusted.trust_list) == 2 and "Elsewhere root" in trusted.trust_list[1]
    # Ours stays trusted with the extended list, and the foreign root does not vouch for our files on its own.
    mine = read_provenance(signed, trust_anchors_pem=extended)
    assert mine.trusted and mine.claim_generator == "provatar/0.1.0"
    assert mine.ai_assertions == ["c2pa.created: trainedAlgorithmicMedia"]
    assert not read_provenance(signed, trust_anchors_pem=foreign_root.read_text()).trusted


def test_foreign_manifest_without_ai_declaration(ca: DevCA, example_photo: Path, tmp_path: Path) -> None:
    capture = "http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture"
    foreign, _ = _foreign_signed_jpeg(tmp_path, example_photo, capture)
    report = read_provenance(foreign, trust_anchors_pem=ca.root.read_text())
    assert report.present and not report.ai_generated and report.ai_assertions == []


def test_trust_bundle_dedupes_and_rejects_non_pem(ca: DevCA) -> None:
    root = ca.root.read_text()
    assert trust_bundle(root, root) == trust_bundle(root, None)
    assert trust_bundle(None, None) is None
    with pytest.raises(SignerConfigError):
        trust_bundle(root, "not a certificate")
    with pytest.raises(SignerConfigError):
        bad = "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n"
        read_provenance(Path("unused.mp4"), trust_anchors_pem=bad)
