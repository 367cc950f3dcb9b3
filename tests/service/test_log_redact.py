"""The log filter that keeps query-string tokens out of the server's logs (the real server is tested in
test_real_server.py; these are the edge cases of the rewriting itself)."""

from __future__ import annotations

import logging

import pytest

from service.log_redact import REDACTED, RedactTokens, redact, uvicorn_log_config


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("/v1/stream?access_token=eyJ.a.b", f"/v1/stream?access_token={REDACTED}"),
        ("/x?a=1&ACCESS_TOKEN=abc&b=2", f"/x?a=1&ACCESS_TOKEN={REDACTED}&b=2"),
        ("/x?token=t1;api_key=k2#frag", f"/x?token={REDACTED};api_key={REDACTED}#frag"),
        ('"GET /x?client_secret=s3 HTTP/1.1"', f'"GET /x?client_secret={REDACTED} HTTP/1.1"'),
        ("/x?tokenizer=keep&monkey=keep&tokens=keep", "/x?tokenizer=keep&monkey=keep&tokens=keep"),
        ("/x?access_token=", f"/x?access_token={REDACTED}"),
        ("no query at all", "no query at all"),
    ],
)
def test_redact(line: str, expected: str) -> None:
    assert redact(line) == expected


def test_filter_keeps_the_argument_tuple_that_uvicorns_access_formatter_unpacks() -> None:
    record = logging.LogRecord(
        "uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "GET", "/v1/x?access_token=SECRET", "1.1", 200), None,
    )
    assert RedactTokens().filter(record)
    assert record.args == ("127.0.0.1:5", "GET", f"/v1/x?access_token={REDACTED}", "1.1", 200)
    assert "SECRET" not in record.getMessage()


def test_uvicorn_config_filters_every_handler_and_the_root_logger() -> None:
    config = uvicorn_log_config()
    assert all("redact_tokens" in h["filters"] for h in config["handlers"].values())
    assert config["root"]["handlers"] == ["default"]  # (applied for real by the server in test_real_server.py)
