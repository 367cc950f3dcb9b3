from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy import text

from service.api.deps import RuntimeDep

router = APIRouter(tags=["health"])


@router.get("/health")
def health(rt: RuntimeDep) -> dict[str, object]:
    """Liveness and readiness: the database answers and the audit chain head is readable."""
    with rt.engine.connect() as conn:
        conn.execute(text("SELECT 1"))
    checkpoint = rt.audit.checkpoint()
    return {"status": "ok", "database": rt.engine.dialect.name, "audit_entries": checkpoint.size if checkpoint else 0}


@router.get("/.well-known/jwks.json")
def jwks(rt: RuntimeDep) -> dict[str, object]:
    """Public keys that verify this service's access tokens."""
    return rt.tokens.jwks()
