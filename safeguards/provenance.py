"""C2PA provenance: sign generated MP4s with a manifest that says what made them, and read manifests back.

Why this shape: signing keys are resources (a file-backed key, or a KMS/HSM reached through a callback), so
`Signer` is a context manager with two constructors; what goes into the manifest is one plain dataclass,
`ManifestSpec`, with ids only (no personal data); reading returns a `ProvenanceReport` for every outcome a
verifier cares about, and `present=False` for the expected "no manifest" case instead of an exception. Trust
is decided by c2pa-rs against the trust anchors the caller passes (the service's root, or a production anchor
list).

The manifest carries: `c2pa.actions` with `c2pa.created` (digitalSourceType trainedAlgorithmicMedia,
softwareAgent provatar/<version>) and `c2pa.watermarked.bound` (C2PA 2.1+: an invisible watermark bound to this
manifest as its soft binding); the `c2pa.soft-binding` assertion that c2pa-rs requires with a watermark action
(`alg` names the watermark scheme and version, e.g. org.provatar.watermark.dwtdctsvd-bch.v3, `blocks` carry the
payload, which also lets a verifier holding only a re-encoded copy look the manifest up by its watermark); the
photo and the audio as `inputTo` ingredients without thumbnails; `cawg.training-mining` with every use notAllowed;
and `org.provatar.generation` with the generation, policy decision and consent record ids and the policy version.

Reading works for a manifest from any signer: it reports the signer, the claim generator, the AI declarations
(digitalSourceType) and the validation state against a trust list (our anchor plus configured extras).
"""

from __future__ import annotations

import base64
import json
import mimetypes
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self

import c2pa
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from generation.media import sniff_media_type
from safeguards.errors import SignerConfigError, SigningFailed, UnsupportedMedia
from safeguards.pki import DevCA, create_dev_ca

__all__ = [
    "AI_SOURCE_TYPES",
    "DevCA",
    "GENERATION_ASSERTION",
    "ManifestSpec",
    "ProvenanceReport",
    "Signer",
    "TRAINED_ALGORITHMIC_MEDIA",
    "create_dev_ca",
    "read_provenance",
    "sign_mp4",
    "trust_bundle",
]

TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
# Source types that declare the asset as (partly) made by an AI model.
AI_SOURCE_TYPES = frozenset(
    {
        TRAINED_ALGORITHMIC_MEDIA,
        "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia",
        "http://cv.iptc.org/newscodes/digitalsourcetype/compositeSynthetic",
        "http://cv.iptc.org/newscodes/digitalsourcetype/algorithmicMedia",
    }
)
GENERATION_ASSERTION = "org.provatar.generation"
TRAINING_MINING_USES = (
    "cawg.data_mining",
    "cawg.ai_inference",
    "cawg.ai_generative_training",
    "cawg.ai_training",
)
ValidationState = Literal["Trusted", "Valid", "Invalid"]
_ALGS = {"es256", "es384", "es512", "ps256", "ps384", "ps512", "ed25519"}


# --- signer ------------------------------------------------------------------------------------------------


def _alg_for_key(public_key: object) -> str:
    """The COSE algorithm c2pa-rs should use for a certificate's key."""
    if isinstance(public_key, ec.EllipticCurvePublicKey):
        by_curve = {"secp256r1": "es256", "secp384r1": "es384", "secp521r1": "es512"}
        if public_key.curve.name in by_curve:
            return by_curve[public_key.curve.name]
    if isinstance(public_key, rsa.RSAPublicKey):
        return "ps256"
    if isinstance(public_key, ed25519.Ed25519PublicKey):
        return "ed25519"
    raise SignerConfigError(f"unsupported signing key type {type(public_key).__name__}")


def _leaf_certificate(chain_pem: bytes) -> x509.Certificate:
    try:
        certs = x509.load_pem_x509_certificates(chain_pem)
    except ValueError as exc:
        raise SignerConfigError(f"the signing certificate chain is not PEM certificates: {exc}") from exc
    if not certs:
        raise SignerConfigError("the signing certificate chain is empty")
    leaf = certs[0]
    if leaf.issuer == leaf.subject:
        raise SignerConfigError(
            "the first certificate of the chain is self-signed; C2PA needs a CA-issued leaf"
        )
    return leaf


class Signer:
    """A C2PA signing credential: a certificate chain (leaf first) plus a way to sign bytes.

    Use as a context manager; `close()` frees the native signer. Reusable across `sign_mp4` calls.
    """

    def __init__(self, native: c2pa.Signer, *, cert_chain_pem: str, alg: str, subject: str) -> None:
        self._native: c2pa.Signer | None = native
        self.cert_chain_pem = cert_chain_pem
        self.alg = alg
        self.subject = subject

    @classmethod
    def from_pem(
        cls, cert_chain_pem: str | bytes, private_key_pem: str | bytes, *, tsa_url: str | None = None
    ) -> Signer:
        """A signer from an in-memory chain and private key (PKCS#8 or traditional PEM, unencrypted)."""
        chain = cert_chain_pem.encode() if isinstance(cert_chain_pem, str) else cert_chain_pem
        key_bytes = private_key_pem.encode() if isinstance(private_key_pem, str) else private_key_pem
        leaf = _leaf_certificate(chain)
        try:
            key = serialization.load_pem_private_key(key_bytes, password=None)
        except (ValueError, TypeError) as exc:
            raise SignerConfigError(f"the signing key is not an unencrypted PEM private key: {exc}") from exc
        pub = serialization.PublicFormat.SubjectPublicKeyInfo
        der = serialization.Encoding.DER
        if key.public_key().public_bytes(der, pub) != leaf.public_key().public_bytes(der, pub):
            raise SignerConfigError("the signing key does not match the first certificate of the chain")
        alg = _alg_for_key(leaf.public_key())
        pkcs8 = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        _check_tsa(tsa_url)
        try:
            native = c2pa.Signer.from_info(c2pa.C2paSignerInfo(alg.encode(), chain, pkcs8, tsa_url))
        except c2pa.C2paError as exc:
            raise SignerConfigError(f"the C2PA SDK rejected the signing credential: {exc}") from exc
        return cls(native, cert_chain_pem=chain.decode(), alg=alg, subject=leaf.subject.rfc4514_string())

    @classmethod
    def from_files(
        cls, cert_chain_path: Path, private_key_path: Path, *, tsa_url: str | None = None
    ) -> Signer:
        """A signer from `chain.pem` (leaf + intermediates) and the leaf's key file (dev CA or production)."""
        try:
            chain = Path(cert_chain_path).read_bytes()
            key = Path(private_key_path).read_bytes()
        except OSError as exc:
            raise SignerConfigError(f"cannot read the signing credential: {exc}") from exc
        return cls.from_pem(chain, key, tsa_url=tsa_url)

    @classmethod
    def from_dev_ca(cls, ca: DevCA, *, tsa_url: str | None = None) -> Signer:
        return cls.from_files(ca.chain, ca.signer_key, tsa_url=tsa_url)

    @classmethod
    def from_callback(
        cls,
        sign: Callable[[bytes], bytes],
        cert_chain_pem: str | bytes,
        *,
        alg: str | None = None,
        tsa_url: str | None = None,
    ) -> Signer:
        """A signer whose private key never enters this process (KMS/HSM): `sign(data) -> signature`.

        For ECDSA the callback may return a DER signature (what KMS APIs and `cryptography` produce); it is
        converted to the fixed-size r||s form COSE needs. `alg` defaults to the one the leaf's key implies.
        """
        chain = cert_chain_pem.encode() if isinstance(cert_chain_pem, str) else cert_chain_pem
        leaf = _leaf_certificate(chain)
        resolved = (alg or _alg_for_key(leaf.public_key())).lower()
        if resolved not in _ALGS:
            raise SignerConfigError(f"unsupported signing algorithm {alg!r}")
        _check_tsa(tsa_url)
        coord = {"es256": 32, "es384": 48, "es512": 66}.get(resolved)

        def cose_sign(data: bytes) -> bytes:
            signature = sign(data)
            if coord is not None and len(signature) != 2 * coord:
                from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

                r, s = decode_dss_signature(signature)
                signature = r.to_bytes(coord, "big") + s.to_bytes(coord, "big")
            return signature

        try:
            native = c2pa.Signer.from_callback(
                cose_sign, getattr(c2pa.C2paSigningAlg, resolved.upper()), chain.decode(), tsa_url
            )
        except c2pa.C2paError as exc:
            raise SignerConfigError(f"the C2PA SDK rejected the callback signer: {exc}") from exc
        return cls(native, cert_chain_pem=chain.decode(), alg=resolved, subject=leaf.subject.rfc4514_string())

    @property
    def native(self) -> c2pa.Signer:
        if self._native is None:
            raise SignerConfigError("this signer has been closed")
        return self._native

    def close(self) -> None:
        if self._native is not None:
            self._native.close()
            self._native = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _check_tsa(tsa_url: str | None) -> None:
    if tsa_url is not None and not tsa_url.startswith(("http://", "https://")):
        raise SignerConfigError(f"the timestamp authority URL must be http(s), got {tsa_url!r}")


# --- signing ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ManifestSpec:
    """What the manifest of one generated clip says. Ids and versions only: no names, no faces, no audio."""

    title: str
    generation_id: str
    policy_decision_id: str
    consent_record_id: str
    policy_version: str
    watermark_algorithm: str
    watermark_payload_hex: str
    software_version: str
    photo_path: Path
    audio_path: Path
    extra: dict[str, Any] = field(default_factory=dict)  # more non-personal fields for the provatar assertion

    def definition(self) -> dict[str, Any]:
        """The c2pa-rs manifest definition (ingredients are added from the files at signing time)."""
        agent = {"name": "provatar", "version": self.software_version}
        try:
            payload_b64 = base64.b64encode(bytes.fromhex(self.watermark_payload_hex)).decode()
        except ValueError as exc:
            raise SigningFailed(f"watermark payload is not hex: {self.watermark_payload_hex!r}") from exc
        generation = {
            "generation_id": self.generation_id,
            "policy_decision_id": self.policy_decision_id,
            "consent_record_id": self.consent_record_id,
            "policy_version": self.policy_version,
            **self.extra,
        }
        return {
            "claim_generator_info": [agent],
            "title": self.title,
            "format": "video/mp4",
            "assertions": [
                {
                    "label": "c2pa.actions",
                    "data": {
                        "actions": [
                            {
                                "action": "c2pa.created",
                                "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA,
                                "softwareAgent": agent,
                                "description": f"talking-face video made by provatar/{self.software_version}",
                            },
                            {
                                "action": "c2pa.watermarked.bound",
                                "softwareAgent": agent,
                                "parameters": {
                                    "algorithm": self.watermark_algorithm,
                                    "payload": self.watermark_payload_hex,
                                },
                            },
                        ]
                    },
                },
                {
                    "label": "c2pa.soft-binding",
                    "data": {
                        "alg": self.watermark_algorithm,
                        "name": "provatar invisible watermark (generation tag + keyed check)",
                        "blocks": [{"scope": {}, "value": payload_b64}],
                    },
                },
                {
                    "label": "cawg.training-mining",
                    "data": {"entries": {use: {"use": "notAllowed"} for use in TRAINING_MINING_USES}},
                },
                {"label": GENERATION_ASSERTION, "data": generation},
            ],
        }


def _mime(path: Path) -> str:
    """MIME type from the file's bytes (magic numbers); the extension only when the bytes match no known signature.

    Never the name first: an upload called photo.png that holds JPEG bytes must be declared image/jpeg, or the
    C2PA SDK refuses the ingredient and the signing fails after the whole video was rendered.
    """
    sniffed = sniff_media_type(path)
    if sniffed is not None:
        return sniffed.mime
    guessed, _ = mimetypes.guess_type(path.name)
    return guessed or ""


def _ingredient(path: Path, role: str) -> tuple[dict[str, Any], str | None]:
    """An `inputTo` ingredient for an input file, and the MIME type to stream it as (None: describe only).

    c2pa reads the formats it supports (hashing them, picking up any manifest they carry); other formats (ogg)
    are described by title and format only.
    """
    if not path.is_file():
        raise SigningFailed(f"ingredient {path} does not exist")
    meta: dict[str, Any] = {"title": path.name, "relationship": "inputTo", "description": role}
    mime = _mime(path)
    if mime in c2pa.Builder.get_supported_mime_types():
        return meta, mime
    return {**meta, "format": mime or "application/octet-stream"}, None


def sign_mp4(src: Path, dst: Path, *, signer: Signer, manifest: ManifestSpec) -> None:
    """Write `dst`: `src` with an embedded, signed C2PA manifest. `dst` appears complete or not at all.

    Thumbnails are disabled, so ingredients carry no image data. Raises SigningFailed (SDK refusal, unreadable
    input) and SignerConfigError (closed signer).
    """
    src, dst = Path(src), Path(dst)
    definition = manifest.definition()
    inputs = [
        _ingredient(Path(manifest.photo_path), "source photo"),
        _ingredient(Path(manifest.audio_path), "source audio"),
    ]
    definition["ingredients"] = [meta for meta, mime in inputs if mime is None]
    context = c2pa.Context.from_dict({"builder": {"thumbnail": {"enabled": False}}})
    tmp_name: str | None = None
    try:
        with c2pa.Builder(definition, context=context) as builder:
            for (meta, mime), path in zip(inputs, (manifest.photo_path, manifest.audio_path), strict=True):
                if mime is not None:
                    with Path(path).open("rb") as fh:
                        builder.add_ingredient(meta, mime, fh)
            fd, tmp_name = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".part", dir=dst.parent)
            os.close(fd)
            with src.open("rb") as source, open(tmp_name, "w+b") as out:
                builder.sign(signer.native, "video/mp4", source, out)
                out.flush()
                os.fsync(out.fileno())
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, dst)
        tmp_name = None
    except c2pa.C2paError as exc:
        raise SigningFailed(f"C2PA signing of {src.name} failed: {exc}") from exc
    except OSError as exc:
        raise SigningFailed(f"cannot sign {src} into {dst}: {exc}") from exc
    finally:
        context.close()
        if tmp_name is not None:
            Path(tmp_name).unlink(missing_ok=True)


# --- reading ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProvenanceReport:
    """What the C2PA manifest of a file says and whether it holds up, whoever signed it.

    state: "Trusted" (valid and chained to an anchor of the trust list), "Valid" (intact, signer not on the trust
        list), "Invalid" (hashes or signature do not match), None when there is no manifest.
    errors: the validation failure codes with their explanations (empty when Trusted/Valid).
    signer: the signing certificate's common name (or issuer); signer_issuer: its issuer organisation.
    claim_generator: the tool that wrote the manifest ("name/version", several joined by ", "), from
        claim_generator_info (C2PA 2.x) or the 1.x claim_generator string.
    ai_assertions: what the manifest declares about AI, one line each: "c2pa.created: trainedAlgorithmicMedia"
        (an action's IPTC digitalSourceType that says AI made or composited the asset).
    trusted: state == "Trusted". trust_list: subjects of the anchors validation used (ours first, then extras).
    """

    present: bool
    state: ValidationState | None
    ai_generated: bool
    signer: str | None
    generation_id: str | None
    assertions: dict[str, Any]
    manifest_json: str | None
    errors: list[str]
    claim_generator: str | None = None
    ai_assertions: list[str] = field(default_factory=list)
    trusted: bool = False
    trust_list: list[str] = field(default_factory=list)
    signer_issuer: str | None = None

    @classmethod
    def absent(cls, trust_list: list[str] | None = None) -> ProvenanceReport:
        return cls(False, None, False, None, None, {}, None, [], trust_list=list(trust_list or []))


def trust_bundle(own_pem: str | None, extra_pem: str | None) -> str | None:
    """Our anchor(s) followed by extra anchors, as one PEM bundle; a certificate given twice is kept once.

    Raises SignerConfigError when the extra bundle holds no PEM certificate (a misconfigured trust list must not
    silently trust nothing extra).
    """
    own = _certificates(own_pem, "our trust anchor") if own_pem else []
    extra = _certificates(extra_pem, "the extra trust anchors") if extra_pem else []
    seen: set[bytes] = set()
    out = []
    for cert in own + extra:
        der = cert.public_bytes(serialization.Encoding.DER)
        if der not in seen:
            seen.add(der)
            out.append(cert.public_bytes(serialization.Encoding.PEM).decode())
    return "".join(out) or None


def _certificates(pem: str, what: str) -> list[x509.Certificate]:
    try:
        certs = x509.load_pem_x509_certificates(pem.encode())
    except ValueError as exc:
        raise SignerConfigError(f"{what} is not a PEM certificate bundle: {exc}") from exc
    if not certs:
        raise SignerConfigError(f"{what} holds no PEM certificate")
    return certs


def _trust_list(trust_anchors_pem: str | None) -> list[str]:
    if not trust_anchors_pem:
        return []
    return [c.subject.rfc4514_string() for c in _certificates(trust_anchors_pem, "the trust anchors")]


def _reader_context(trust_anchors_pem: str | None) -> c2pa.Context:
    if not trust_anchors_pem:
        return c2pa.Context()
    return c2pa.Context.from_dict(
        {"trust": {"trust_anchors": trust_anchors_pem}, "verify": {"verify_trust": True}}
    )


def _failures(store: dict[str, Any]) -> list[str]:
    results = store.get("validation_results") or {}
    found: list[dict[str, Any]] = list((results.get("activeManifest") or {}).get("failure") or [])
    for ingredient in results.get("ingredientDeltas") or []:
        found.extend((ingredient.get("validationDeltas") or {}).get("failure") or [])
    if not found:
        found = [s for s in store.get("validation_status") or [] if s.get("code")]
    return [f"{f.get('code')}: {f.get('explanation', '')}".rstrip(": ") for f in found]


def _ai_assertions(assertions: dict[str, Any]) -> list[str]:
    """Each action whose digitalSourceType declares AI-made or AI-composited content, as "action: type"."""
    out = []
    for label, data in assertions.items():
        if label.startswith("c2pa.actions") and isinstance(data, dict):
            for action in data.get("actions") or []:
                source = action.get("digitalSourceType") if isinstance(action, dict) else None
                if source in AI_SOURCE_TYPES:
                    out.append(f"{action.get('action')}: {source.rsplit('/', 1)[-1]}")
    return out


def _claim_generator(manifest: dict[str, Any]) -> str | None:
    infos = manifest.get("claim_generator_info") or []
    names = [
        "/".join(str(i[k]) for k in ("name", "version") if i.get(k)) for i in infos if isinstance(i, dict)
    ]
    names = [n for n in names if n]
    if names:
        return ", ".join(names)
    legacy = manifest.get("claim_generator")
    return str(legacy) if legacy else None


def read_provenance(path: Path, *, trust_anchors_pem: str | None) -> ProvenanceReport:
    """Read and validate the C2PA manifest of `path`, from any signer, against `trust_anchors_pem` (a PEM bundle:
    the trust list, e.g. `trust_bundle(ours, extras)`; None validates integrity only).

    A file without a manifest gives `present=False`; a file c2pa cannot parse raises UnsupportedMedia; a trust
    list that is not PEM certificates raises SignerConfigError.
    """
    path = Path(path)
    trust_list = _trust_list(trust_anchors_pem)
    context = _reader_context(trust_anchors_pem)
    try:
        with path.open("rb") as fh:
            reader = c2pa.Reader.try_create(_mime(path) or None, fh, context=context)
            if reader is None:
                return ProvenanceReport.absent(trust_list)
            with reader:
                manifest_json = reader.json()
                state = reader.get_validation_state()
    except c2pa.C2paError as exc:
        raise UnsupportedMedia(f"cannot read C2PA data from {path.name}: {exc}") from exc
    except OSError as exc:
        raise UnsupportedMedia(f"cannot open {path}: {exc}") from exc
    finally:
        context.close()

    store = json.loads(manifest_json)
    active = (store.get("manifests") or {}).get(store.get("active_manifest") or "", {})
    assertions = {a["label"]: a.get("data") for a in active.get("assertions") or [] if "label" in a}
    signature = active.get("signature_info") or {}
    generation = assertions.get(GENERATION_ASSERTION)
    errors = _failures(store)
    if state not in ("Trusted", "Valid", "Invalid"):
        state = "Invalid" if errors else "Valid"
    ai_assertions = _ai_assertions(assertions)
    return ProvenanceReport(
        present=True,
        state=state,
        ai_generated=bool(ai_assertions),
        signer=signature.get("common_name") or signature.get("issuer"),
        generation_id=generation.get("generation_id") if isinstance(generation, dict) else None,
        assertions=assertions,
        manifest_json=manifest_json,
        errors=errors if state == "Invalid" else [],
        claim_generator=_claim_generator(active),
        ai_assertions=ai_assertions,
        trusted=state == "Trusted",
        trust_list=trust_list,
        signer_issuer=signature.get("issuer"),
    )
