"""Limits on the text that comes in from outside (URLs, form fields, CLI arguments), checked at the edge.

PostgreSQL refuses NUL in text (psycopg raises a DataError deep inside a query: a 500), terminals execute control
sequences, and unbounded strings end up in audit entries and logs. So every identifier and name is refused when it
carries a control character (C0, DEL, C1) or is longer than its limit, with a 4xx naming the field.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from service.errors import InvalidInput

# C0 controls (NUL, ESC, CR, LF, ...), DEL and the C1 controls (0x80-0x9F, e.g. CSI 0x9B): never valid in an id,
# a name or a URL, and the characters that let a string rewrite a terminal or split a log line.
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# The same rule as a pattern for FastAPI/pydantic fields (`Form(pattern=SAFE_TEXT_PATTERN)`).
SAFE_TEXT_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]*$"

MAX_ID_LENGTH = 255  # client ids, subject/consent/generation ids, audit actors
MAX_NAME_LENGTH = 200  # subject display names, block-list labels (the column limits in safeguards.consent)
MAX_TEXT_LENGTH = 1000  # reasons
MAX_URL_LENGTH = 8192  # path + query, as most proxies allow


def has_control_chars(value: str) -> bool:
    return CONTROL_CHARS.search(value) is not None


def check_text(value: str, *, field: str, max_length: int = MAX_ID_LENGTH, code: str = "invalid_request") -> str:
    """`value` if it has no control characters and at most `max_length` characters; InvalidInput(code) else."""
    if len(value) > max_length:
        raise InvalidInput(f"{field} is longer than {max_length} characters", code=code)
    if has_control_chars(value):
        raise InvalidInput(f"{field} contains a control character (e.g. NUL or ESC); they are not allowed", code=code)
    return value


def check_url_parts(path: str, query_items: Iterable[tuple[str, str]]) -> None:
    """Refuse a request whose decoded path or query carries control characters (or is absurdly long)."""
    if len(path) > MAX_URL_LENGTH:
        raise InvalidInput(f"the URL path is longer than {MAX_URL_LENGTH} characters", code="invalid_request")
    if has_control_chars(path):
        raise InvalidInput("the URL path contains a control character (e.g. %00)", code="invalid_request")
    for name, value in query_items:
        if has_control_chars(name) or has_control_chars(value):
            raise InvalidInput(
                f"query parameter {name[:40]!r} contains a control character (e.g. %00)", code="invalid_request"
            )
        if len(value) > MAX_URL_LENGTH:
            raise InvalidInput(f"query parameter {name[:40]!r} is too long", code="invalid_request")


def terminal_safe(value: object, *, max_length: int | None = None) -> str:
    """`value` as text that cannot drive a terminal: control characters (ANSI/OSC escapes, CR, BEL) shown as
    `\\xNN`. Rich markup is a separate concern: escape it with `rich.markup.escape` where markup is on."""
    text = CONTROL_CHARS.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value))
    if max_length is not None and len(text) > max_length:
        text = text[: max_length - 1] + "…"
    return text
