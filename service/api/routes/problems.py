"""Problem types (RFC 9457 §3.1.1): each error's `type` is `/problems/{code}`, and GETting it says what it means."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.problems import COMMON_ERRORS
from service.errors import HINTS, NotFound, problem_title

router = APIRouter(tags=["errors"])


@router.get("/problems/{code}", responses={404: COMMON_ERRORS[404]})
def problem_type(code: str) -> dict[str, str]:
    """A human description of one problem type: its title and what to do about it."""
    if code not in HINTS:
        raise NotFound(f"no problem type {code!r}")
    return {"type": f"/problems/{code}", "code": code, "title": problem_title(code), "hint": HINTS[code]}
