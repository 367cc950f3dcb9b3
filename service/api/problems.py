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


def described(description: str, **headers: str) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": {PROBLEM_MEDIA_TYPE: {"schema": _REF}}}
    if headers:
        out["headers"] = {name: {"description": text, "schema": {"type": "string"}} for name, text in headers.items()}
    return out


# Merged into every operation of the OpenAPI (see main.py); the schema itself is added by `add_problem_schema`.
COMMON_ERRORS: dict[int | str, dict[str, Any]] = {
    400: described("Invalid input (e.g. an undecodable photo, invalid controls)"),
    401: described(
        "No, an invalid or an expired bearer token (RFC 6750 §3.1)",
        **{"WWW-Authenticate": 'Bearer realm="provatar"[, error="invalid_token", error_description="..."]'},
    ),
    403: described(
        "The token lacks the operation's scope (insufficient_scope), or the policy denied the request (`reasons`)",
        **{"WWW-Authenticate": 'Bearer realm="provatar", error="insufficient_scope", scope="..." (scope errors)'},
    ),
    404: described("No such resource for this client"),
    409: described("The resource's state does not allow this now (e.g. not finished yet, subject erased)"),
    413: described("An upload or the request body is over its size limit"),
    415: described("An upload is not of a type this operation accepts"),
    422: described("Request fields failed validation (`errors` lists them)"),
    429: described("Rate limit hit", **{"Retry-After": "seconds to wait before retrying"}),
    500: described("Internal error (no internals are shown)"),
    503: described(
        "The database or the disk cannot be used right now (unreachable, locked, full or read-only)",
        **{"Retry-After": "seconds to wait before retrying"},
    ),
}

# Operations that need no token (health, problem types, discovery, the token endpoint) can still be refused before
# their handler runs: a control character in the URL is a 400 app-wide, a malformed parameter a 422, and a database
# or disk failure a 503. Documented on them too, so a client (and schemathesis) finds every status it can get.
PUBLIC_ERRORS: dict[int | str, dict[str, Any]] = {code: COMMON_ERRORS[code] for code in (400, 422, 500, 503)}


def add_problem_schema(openapi: dict[str, Any]) -> dict[str, Any]:
    schemas = openapi.setdefault("components", {}).setdefault("schemas", {})
    schemas["ProblemDetails"] = ProblemDetails.model_json_schema(ref_template="#/components/schemas/{model}")
    return openapi
