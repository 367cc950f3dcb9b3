"""Log lines that carry the request and the job they belong to, as text or as one JSON object per line
(`PROVATAR_LOG_FORMAT=json`, for log shippers).

The ids travel in context variables: the API's request-id middleware binds `request_id` for everything a request
does (its threads included: asyncio.to_thread and Starlette's thread pool copy the context), and a job run binds
`generation_id` (and the request id that asked for it) on whichever worker thread or process runs it. A logging
filter copies them onto every record, so any logger (ours, uvicorn's access log, libraries) gets them for free.
Token redaction (service/log_redact.py) runs as a handler filter before formatting, so JSON lines are redacted too.
"""

from __future__ import annotations

import json
import logging
import logging.config
from contextvars import ContextVar, Token
from datetime import UTC, datetime
from typing import Any

from service.log_redact import RedactTokens

request_id_var: ContextVar[str | None] = ContextVar("provatar_request_id", default=None)
generation_id_var: ContextVar[str | None] = ContextVar("provatar_generation_id", default=None)
# LogRecord attributes that are not extra fields (anything else a caller passed with `extra=` is kept in JSON).
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "color_message"}


def bind_job(generation_id: str, request_id: str | None) -> tuple[Token[str | None], Token[str | None]]:
    """Tag this thread's log lines with a job; pass the result to `unbind_job` when the job is done."""
    return generation_id_var.set(generation_id), request_id_var.set(request_id)


def unbind_job(tokens: tuple[Token[str | None], Token[str | None]]) -> None:
    generation_id_var.reset(tokens[0])
    request_id_var.reset(tokens[1])


class ContextIds(logging.Filter):
    """Copy the bound request_id / generation_id onto each record (None when there is none)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = request_id_var.get()
        if getattr(record, "generation_id", None) is None:
            record.generation_id = generation_id_var.get()
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (UTC, ISO 8601), level, logger, message, request_id, generation_id, any
    `extra=` fields, and the traceback as `exc_info` text when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
            "generation_id": getattr(record, "generation_id", None),
        }
        if record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) == 5:
            # uvicorn's access line, also as fields: client, method, path (query tokens already redacted), status.
            entry.update(zip(("client", "method", "path", "http_version", "status"), record.args, strict=True))
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def log_config(log_format: str, *, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """A logging dictConfig: `base` (uvicorn's, for `provatar serve`) or a plain stderr handler, with the context
    ids on every handler, our `provatar.*` loggers at INFO, and in json mode every handler writing JSON lines."""
    config: dict[str, Any] = base or {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
        "handlers": {
            "default": {"class": "logging.StreamHandler", "formatter": "default", "stream": "ext://sys.stderr"}
        },
        "root": {"handlers": ["default"], "level": "WARNING"},
    }
    filters = config.setdefault("filters", {})
    filters["context_ids"] = {"()": ContextIds}
    filters.setdefault("redact_tokens", {"()": RedactTokens})
    for handler in config["handlers"].values():
        # First, so the ids are on the record before any other filter or the formatter sees it; and token
        # redaction on every handler, whatever the format.
        rest = [f for f in handler.get("filters", []) if f != "redact_tokens"]
        handler["filters"] = ["context_ids", "redact_tokens", *rest]
    if log_format == "json":
        config["formatters"]["json"] = {"()": JsonFormatter}
        for handler in config["handlers"].values():
            handler["formatter"] = "json"
    # The service's own operational lines (job failures, storage trouble, sweeps) at INFO, to the same handler.
    config.setdefault("loggers", {})["provatar"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


def configure_logging(log_format: str) -> None:
    """Logging for a process that is not `provatar serve` (e.g. a worker): stderr, text or JSON."""
    logging.config.dictConfig(log_config(log_format))
