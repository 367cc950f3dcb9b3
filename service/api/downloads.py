"""Serving a stored file over HTTP without reading it into memory: a local file goes out through Starlette's
FileResponse (sendfile, `Range`, `If-Range`); an object in S3 is streamed chunk by chunk from the bucket, and a single
`Range` is forwarded to it, so both stores answer range requests (video players seek with them) the same way."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import FileResponse, Response, StreamingResponse

from service.errors import Gone
from service.storage import Storage

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def stored_file_response(
    request: Request, storage: Storage, location: str, *, media_type: str, filename: str
) -> Response:
    """The file recorded at `location` as a download named `filename` (200, or 206 for one satisfiable range)."""
    key = storage.key_of(location)
    local = storage.local_path(key) if key is not None else Path(location)
    if local is not None:
        if not local.is_file():
            raise _missing()
        return FileResponse(local, media_type=media_type, filename=filename)
    assert key is not None
    size = storage.size(key)
    if size is None:
        raise _missing()
    headers = {
        "accept-ranges": "bytes",
        "content-disposition": f"attachment; filename*=utf-8''{quote(filename)}"
        if quote(filename) != filename
        else f'attachment; filename="{filename}"',
    }
    wanted = _single_range(request, size)
    if wanted == "unsatisfiable":
        return Response(status_code=416, headers={"content-range": f"bytes */{size}"})
    if wanted is None:
        headers["content-length"] = str(size)
        return StreamingResponse(storage.iter_bytes(key), media_type=media_type, headers=headers)
    start, end = wanted
    headers["content-length"] = str(end - start + 1)
    headers["content-range"] = f"bytes {start}-{end}/{size}"
    return StreamingResponse(
        storage.iter_bytes(key, start, end), status_code=206, media_type=media_type, headers=headers
    )


def _single_range(request: Request, size: int) -> tuple[int, int] | str | None:
    """(start, end) inclusive for one satisfiable `Range: bytes=...`; "unsatisfiable"; or None to send it all.

    Several ranges, a malformed header or an `If-Range` (we keep no validators for objects) get the whole file,
    which RFC 9110 §14.2 allows a server to answer to any range request."""
    header = request.headers.get("range")
    if header is None or "if-range" in request.headers:
        return None
    match = _RANGE.match(header.strip())
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first, last = match.group(1), match.group(2)
    if first == "":  # the last N bytes
        n = int(last)
        if n == 0:
            return "unsatisfiable"
        return max(0, size - n), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size:
        return "unsatisfiable"
    if end < start:
        return None
    return start, end


def _missing() -> Gone:
    return Gone("the video is no longer in storage", code="output_missing")
