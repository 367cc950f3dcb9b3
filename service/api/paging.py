"""HTTP side of cursor pagination: the same body shape and `Link` header for every list."""

from __future__ import annotations

from typing import Any

from fastapi import Request, Response

from service.pagination import Page


def page_body(request: Request, response: Response, page: Page[Any], items: list[Any]) -> dict[str, Any]:
    """`{"items": [...], "next": URL | null}` and `Link: <URL>; rel="next"` (RFC 8288) when there is a next page."""
    next_url = None
    if page.next_cursor:
        next_url = str(request.url.include_query_params(after=page.next_cursor))
        response.headers["Link"] = f'<{next_url}>; rel="next"'
    return {"items": items, "next": next_url}
