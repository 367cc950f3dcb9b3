"""Shared fixtures: example media shipped with the repo, ../shared/media (skips when absent), databases."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO_ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = REPO_ROOT / "examples"
SHARED_MEDIA = REPO_ROOT.parent / "shared" / "media"
POSTGRES_URL = os.environ.get("PROVATAR_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def example_photo() -> Path:
    """Public-domain NASA portrait of Eileen Collins (512x512), shipped in examples/."""
    return EXAMPLES / "astronaut_eileen_collins.png"


@pytest.fixture(scope="session")
def example_audio() -> Path:
    """Public-domain LJSpeech clip LJ001-0001 (9.7 s), shipped in examples/."""
    return EXAMPLES / "ljspeech_LJ001-0001.wav"


@pytest.fixture(scope="session")
def shared_media() -> Path:
    """The real test media in ../shared/media; tests using it skip on machines without it."""
    if not (SHARED_MEDIA / "SOURCES.tsv").is_file():
        pytest.skip("../shared/media is not present on this machine")
    return SHARED_MEDIA


@pytest.fixture()
def sqlite_engine(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A fresh SQLite database with every provatar table created."""
    from sqlmodel import SQLModel, create_engine

    import audit.models  # noqa: F401  (registers tables)
    import safeguards.consent  # noqa: F401

    engine = create_engine(f"sqlite:///{tmp_path / 'test.db'}")
    SQLModel.metadata.create_all(engine)
    yield engine
    engine.dispose()


@contextmanager
def postgres_schema(prefix: str = "t") -> Iterator[str]:
    """URL of a fresh schema on the real PostgreSQL server (127.0.0.1:5432, database `test`), dropped afterwards.
    Skips when the server is unreachable, except under CI (which runs it)."""
    import sqlalchemy

    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(POSTGRES_URL)
    try:
        with admin.begin() as conn:
            conn.execute(sqlalchemy.text(f'CREATE SCHEMA "{schema}"'))
    except sqlalchemy.exc.OperationalError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sqlalchemy.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture()
def pg_url() -> Iterator[str]:
    """URL of a fresh schema on the real PostgreSQL server, dropped afterwards (postgres_schema)."""
    with postgres_schema() as url:
        yield url


@pytest.fixture()
def pg_engine(pg_url: str) -> Iterator[object]:
    """An engine on a fresh PostgreSQL schema with every provatar table created."""
    from sqlmodel import SQLModel, create_engine

    import audit.models  # noqa: F401
    import safeguards.consent  # noqa: F401

    engine = create_engine(pg_url)
    SQLModel.metadata.create_all(engine)
    try:
        yield engine
    finally:
        engine.dispose()
