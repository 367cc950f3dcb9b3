"""The long-lived parts of a running provatar (database, audit log, keys, models), built once per process.

Heavy models (face analysis, generator, detector) load on first use, so `provatar audit verify` does not pay for
torch and mediapipe start-up.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from audit import AuditLog, FileWitness, load_or_create_signing_key
from service.auth import SCOPES, TokenService, create_client
from service.db import create_tables, make_engine
from service.errors import NotInitialized
from service.keys import AUDIT_KEY, SERVICE_SECRET, create_service_keys, derive_key
from service.models import Client
from service.permissions import private_umask, tighten
from service.settings import Settings

if TYPE_CHECKING:
    from generation import TalkingFaceGenerator
    from policies import LoadedPolicy
    from safeguards.classifier import SyntheticClipClassifier
    from safeguards.cues.fusion import FusionModel
    from safeguards.identity import FaceAnalyzer
    from service.storage import Storage


@dataclass(frozen=True)
class InitResult:
    data_dir: Path
    created_ca: bool
    admin_client_id: str | None
    admin_secret: str | None


def initialize(settings: Settings, *, admin_name: str = "admin") -> InitResult:
    """Create the data dir, keys, dev signing CA, tables and a first admin client (idempotent).

    The admin secret is returned only when the admin client is created; it is never stored in clear.
    """
    from safeguards.pki import create_dev_ca

    # Everything made here is the owner's only: directories 0700, the database and every key 0600.
    with private_umask():
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        for d in (settings.outputs_dir, settings.uploads_dir):
            d.mkdir(parents=True, exist_ok=True)
        create_service_keys(settings.keys_dir)
        created_ca = False
        if settings.signing_cert_chain is None and not (settings.pki_dir / "root.pem").exists():
            create_dev_ca(settings.pki_dir)
            created_ca = True
        settings.witness_path.parent.mkdir(parents=True, exist_ok=True)
        engine = make_engine(settings.db_url)
        create_tables(engine)
    tighten(settings)  # an installation made by an older release, initialised again
    admin_id = admin_secret = None
    with Session(engine) as session:
        if session.exec(select(Client)).first() is None:
            client, admin_secret = create_client(session=session, name=admin_name, scopes=list(SCOPES))
            admin_id = client.client_id
            session.commit()
    rt = Runtime(settings, engine=engine)
    rt.audit.append(
        action="service.initialized",
        actor="cli:init",
        outcome="ok",
        details={"data_dir": str(settings.data_dir), "created_ca": created_ca, "admin_client_id": admin_id},
    )
    engine.dispose()
    return InitResult(settings.data_dir, created_ca, admin_id, admin_secret)


class Runtime:
    """Everything a request needs, built from one Settings object."""

    def __init__(self, settings: Settings, *, engine: Engine | None = None) -> None:
        if not (settings.keys_dir / SERVICE_SECRET).exists():
            raise NotInitialized(f"no provatar installation at {settings.data_dir}")
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        self.settings = settings
        self.engine = engine or make_engine(settings.db_url)
        with private_umask():  # a new SQLite file (another PROVATAR_DATABASE_URL) and the audit key: 0600
            create_tables(self.engine)
        tighten(settings)
        key = load_or_create_signing_key(settings.audit_signing_key or settings.keys_dir / AUDIT_KEY)
        self.audit = AuditLog(self.engine, key, key_id="provatar-audit-1", witness=FileWitness(settings.witness_path))
        self.watermark_key = derive_key(settings.keys_dir, "watermark/v1")

    def session(self) -> Session:
        return Session(self.engine)

    @cached_property
    def storage(self) -> Storage:
        """Where outputs and staged uploads live (service/storage.py): the data dir, or the S3 bucket of
        PROVATAR_STORAGE_URL shared by every API server and worker."""
        from service.storage import open_storage

        return open_storage(self.settings)

    @cached_property
    def tokens(self) -> TokenService:
        return TokenService(self.settings)

    @cached_property
    def policy(self) -> LoadedPolicy:
        from policies import load_policy

        return load_policy()

    @cached_property
    def analyzer(self) -> FaceAnalyzer:
        from safeguards.identity import DlibEmbedder, FaceAnalyzer, FacenetEmbedder

        if self.settings.face_embedder == "facenet":
            if not self.settings.facenet_weights_path:
                raise NotInitialized("face_embedder=facenet needs PROVATAR_FACENET_WEIGHTS_PATH")
            return FaceAnalyzer(
                FacenetEmbedder(self.settings.facenet_weights_path, device=self.settings.device),
                max_side=self.settings.face_detect_max_side,
            )
        return FaceAnalyzer(
            DlibEmbedder(num_jitters=self.settings.face_num_jitters, fuse=self.settings.face_fuse_views),
            max_side=self.settings.face_detect_max_side,
        )

    @cached_property
    def generator(self) -> TalkingFaceGenerator:
        import torch

        from generation import GenerationConfig, TalkingFaceGenerator

        if self.settings.device == "cpu" and self.settings.torch_threads:
            # The pipeline overlaps render, watermark and encode on their own threads; one torch thread per
            # render leaves the other core to them (measured: 56 vs 51 fps end to end on 2 cores).
            torch.set_num_threads(self.settings.torch_threads)
        return TalkingFaceGenerator(
            GenerationConfig(size=self.settings.output_size, fps=self.settings.fps, device=self.settings.device)
        )

    @cached_property
    def classifier(self) -> SyntheticClipClassifier:
        from safeguards.classifier import SyntheticClipClassifier

        return SyntheticClipClassifier.load_default()

    @cached_property
    def fusion(self) -> FusionModel:
        from safeguards.cues.fusion import FusionModel

        return FusionModel.load_default()

    def trust_anchors_pem(self) -> str | None:
        """The C2PA trust list: our anchor, then PROVATAR_EXTRA_TRUST_ANCHORS (other signers' roots)."""
        from safeguards.provenance import trust_bundle

        path, extra = self.settings.trust_anchors_path, self.settings.extra_trust_anchors
        return trust_bundle(path.read_text() if path.exists() else None, extra.read_text() if extra else None)

    def close(self) -> None:
        self.engine.dispose()
