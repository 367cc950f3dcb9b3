"""Console roles, derived from a client's scopes, and the navigation each may see.

The navigation is a convenience: every route also checks the scope it needs (a 403 page otherwise), whatever the
page showed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

# role -> the scopes that make it (any one of them shows the role; each page asks for its own scope)
ROLES: dict[str, tuple[str, ...]] = {
    "reviewer": ("audit:read", "consent:read"),
    "analyst": ("detect",),
    "consent officer": ("consent:write",),
}


@dataclass(frozen=True)
class NavItem:
    label: str
    path: str
    scope: str


NAV: tuple[NavItem, ...] = (
    NavItem("Audit log", "/console/audit", "audit:read"),
    NavItem("Verify", "/console/audit/verify", "audit:read"),
    NavItem("Subjects", "/console/subjects", "consent:read"),
    NavItem("Block list", "/console/blocklist", "consent:read"),
    NavItem("Enroll", "/console/subjects/new", "consent:write"),
    NavItem("Detect", "/console/detect", "detect"),
)


def roles_for(scopes: Iterable[str]) -> list[str]:
    have = set(scopes)
    return [role for role, needs in ROLES.items() if have.intersection(needs)]


def nav_for(scopes: Iterable[str]) -> list[NavItem]:
    have = set(scopes)
    return [item for item in NAV if item.scope in have]


def console_scopes(scopes: Iterable[str]) -> frozenset[str]:
    """The scopes the console acts on (a client without any of them has nothing to do here)."""
    return frozenset(scopes) & {s for needs in ROLES.values() for s in needs}
