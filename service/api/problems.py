"""RFC 9457 problem responses: how a `service.errors.Problem` goes over HTTP, and how the OpenAPI describes it."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from service.errors import Problem

PROBLEM_MEDIA_TYPE = "application/problem+json"


class ProblemResponse(JSONResponse):
    media_type = PROBLEM_MEDIA_TYPE


class ProblemDetails(BaseModel):
    """An error (RFC 9457). `code` and `hint` are provatar's extension members; others may appear per code
    (`reasons` for policy denials, `errors` for invalid fields, `required_scope`, `retry_after`)."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="relative URI of the problem type; GET it for a description")
    title: str = Field(examples=["Not found"])
    status: int = Field(examples=[404])
    detail: str = Field(examples=["no generation 'gen_0' for this client"])
    instance: str = Field(description="the request path this occurrence happened on")
    code: str = Field(description="machine-readable reason (snake_case)", examples=["not_found"])
    hint: str | None = Field(None, description="what to do about it")
    message: str = Field(description="same as detail (kept for older clients)")
    request_id: str | None = None


def problem_response(request: Request, problem: Problem) -> ProblemResponse:
    body = problem.to_problem(instance=request.url.path, request_id=getattr(request.state, "request_id", None))
    headers = dict(problem.headers)
    if problem.http_status in (401, 403, 429):
        headers.setdefault("Cache-Control", "no-store")
    return ProblemResponse(body, status_code=problem.http_status, headers=headers or None)


_REF = {"$ref": "#/components/schemas/ProblemDetails"}


def _described(description: str, **headers: str) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": {PROBLEM_MEDIA_TYPE: {"schema": _REF}}}
    if headers:
        out["headers"] = {name: {"description": text, "schema": {"type": "string"}} for name, text in headers.items()}
    return out


# Merged into every operation of the OpenAPI (see main.py); the schema itself is added by `add_problem_schema`.
COMMON_ERRORS: dict[int | str, dict[str, Any]] = {
    400: _described("Invalid input (e.g. an undecodable photo, invalid controls)"),
    401: _described(
        "No, an invalid or an expired bearer token (RFC 6750 §3.1)",
        **{"WWW-Authenticate": 'Bearer realm="provatar"[, error="invalid_token", error_description="..."]'},
    ),
    403: _described(
        "The token lacks the operation's scope (insufficient_scope), or the policy denied the request (`reasons`)",
        **{"WWW-Authenticate": 'Bearer realm="provatar", error="insufficient_scope", scope="..." (scope errors)'},
    ),
    404: _described("No such resource for this client"),
    422: _described("Request fields failed validation (`errors` lists them)"),
    429: _described("Rate limit hit", **{"Retry-After": "seconds to wait before retrying"}),
    500: _described("Internal error (no internals are shown)"),
}


def add_problem_schema(openapi: dict[str, Any]) -> dict[str, Any]:
    schemas = openapi.setdefault("components", {}).setdefault("schemas", {})
    schemas["ProblemDetails"] = ProblemDetails.model_json_schema(ref_template="#/components/schemas/{model}")
    return openapi
