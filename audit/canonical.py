"""Canonical JSON (RFC 8785, JCS) so that a hash over an entry is reproducible by any other implementation.

Sorted keys (by UTF-16 code units), no whitespace, UTF-8, minimal string escaping and ECMAScript number
formatting. Values outside I-JSON are refused rather than silently rounded: NaN/inf, integers beyond +-(2**53
- 1), non-string keys, lone surrogates and any type that is not None/bool/int/float/str/list/tuple/dict.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from audit.errors import CanonicalizationError

MAX_SAFE_INTEGER = 2**53 - 1


def canonical_json(value: Any) -> bytes:
    """Return the RFC 8785 canonical UTF-8 bytes of `value`; raises CanonicalizationError."""
    parts: list[str] = []
    _write(value, parts, path="$")
    text = "".join(parts)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogate in a string
        raise CanonicalizationError(f"string is not valid Unicode (lone surrogate): {exc}") from exc


def canonical_text(value: Any) -> str:
    """Canonical JSON as a str (for JSONL export)."""
    return canonical_json(value).decode("utf-8")


def normalize(value: Any) -> Any:
    """Round-trip `value` through canonical JSON: tuples become lists, 1.0 stays 1.0 but hashes like 1.

    Storing the normalised value guarantees that what is hashed at append is what the database gives back.
    """
    return json.loads(canonical_json(value))


def format_number(value: float) -> str:
    """ECMAScript Number.prototype.toString for a finite double (RFC 8785 section 3.2.2.3)."""
    if not math.isfinite(value):
        raise CanonicalizationError(
            f"{value!r} is not a finite number; canonical JSON has no NaN or infinity"
        )
    if value == 0:
        return "0"  # also -0
    sign = "-" if value < 0 else ""
    # repr() gives the shortest digits that round-trip, as ECMAScript requires; only the layout differs.
    digits_tuple, exponent = Decimal(repr(abs(value))).as_tuple()[1:]
    digits = "".join(map(str, digits_tuple)).lstrip("0")
    assert isinstance(exponent, int)
    stripped = digits.rstrip("0")
    exponent += len(digits) - len(stripped)
    digits = stripped
    k = len(digits)
    n = k + exponent  # value = 0.digits * 10**n
    if k <= n <= 21:
        body = digits + "0" * (n - k)
    elif 0 < n <= 21:
        body = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        body = "0." + "0" * (-n) + digits
    else:
        e = n - 1
        mantissa = digits if k == 1 else digits[0] + "." + digits[1:]
        body = f"{mantissa}e{'+' if e >= 0 else '-'}{abs(e)}"
    return sign + body


def _write(value: Any, out: list[str], *, path: str) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise CanonicalizationError(
                f"integer at {path} is outside +-(2**53 - 1) and cannot be represented exactly in "
                "JSON numbers; store it as a string"
            )
        out.append(str(int(value)))
    elif isinstance(value, float):
        try:
            out.append(format_number(value))
        except CanonicalizationError as exc:
            raise CanonicalizationError(f"at {path}: {exc.message}") from exc
    elif isinstance(value, str):
        out.append(json.dumps(value, ensure_ascii=False))
    elif isinstance(value, Mapping):
        for key in value:
            if not isinstance(key, str):
                raise CanonicalizationError(f"object key {key!r} at {path} is not a string")
        out.append("{")
        for i, key in enumerate(sorted(value, key=_utf16_key)):
            if i:
                out.append(",")
            out.append(json.dumps(key, ensure_ascii=False))
            out.append(":")
            _write(value[key], out, path=f"{path}.{key}")
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _write(item, out, path=f"{path}[{i}]")
        out.append("]")
    else:
        raise CanonicalizationError(
            f"value of type {type(value).__name__} at {path} is not JSON; convert it (e.g. to str) first"
        )


def _utf16_key(key: str) -> bytes:
    # RFC 8785 sorts property names by their UTF-16 code units, not by code points.
    return key.encode("utf-16-be", "surrogatepass")
