"""Keep bearer tokens out of the server's logs.

A WebSocket client may pass its token as `?access_token=` (browsers cannot set headers on a WebSocket), and uvicorn
writes every request line, query string included, to its access and error logs. `RedactTokens` is a logging filter
that rewrites the value of every token-like query parameter to `[REDACTED]` before a record is formatted; `serve`
installs it on uvicorn's handlers through `uvicorn_log_config()`.
"""

from __future__ import annotations

import copy
import logging
import re
from typing import Any

# Query parameters that carry credentials: OAuth2's access_token (RFC 6750 §2.3) and the usual variants.
TOKEN_PARAMS = ("access_token", "token", "id_token", "refresh_token", "client_secret", "api_key", "apikey", "key")
REDACTED = "[REDACTED]"
_NAMES = "|".join(re.escape(p) for p in TOKEN_PARAMS)
_PARAM = re.compile(rf"(?i)([?&;](?:{_NAMES})=)[^&;#\s\"']*")


def redact(text: str) -> str:
    """`text` with the value of every token-like query parameter replaced by [REDACTED]."""
    return _PARAM.sub(lambda m: m.group(1) + REDACTED, text)


class RedactTokens(logging.Filter):
    """Redact token query parameters in a record's message and arguments (keeps the argument tuple's shape,
    which uvicorn's access formatter unpacks)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: redact(v) if isinstance(v, str) else v for k, v in record.args.items()}
        return True


def uvicorn_log_config(log_format: str = "text") -> dict[str, Any]:
    """uvicorn's default logging config with `RedactTokens` on every handler (access and error logs alike), and
    the root logger sent through it too; request and job ids on every line, JSON lines when `log_format` is json
    (service/structured_logs.py)."""
    from uvicorn.config import LOGGING_CONFIG

    from service.structured_logs import log_config

    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact_tokens"] = {"()": RedactTokens}
    for handler in config["handlers"].values():
        handler.setdefault("filters", []).append("redact_tokens")
    # Everything else (the websockets library, our own loggers) reaches the same filtered handler, not Python's
    # unfiltered last-resort handler; warnings and errors only, as before.
    config.setdefault("root", {"handlers": ["default"], "level": "WARNING"})
    return log_config(log_format, base=config)
