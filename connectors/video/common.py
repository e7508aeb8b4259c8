"""Small helpers the providers share: header lookup, bearer check, dedup keys, timestamps, names."""
from __future__ import annotations

import hashlib
import hmac
import math
import re
from collections.abc import Mapping
from datetime import datetime, timezone

from connectors.video.errors import VideoRejected

# Unix seconds from 2000 to 2200: anything outside is a unit mix-up (milliseconds) or garbage.
_MIN_TS, _MAX_TS = 946_684_800, 7_258_118_400
_MAX_DEDUP = 255


def header(headers: Mapping[str, str], name: str) -> str | None:
    """The value of header `name`, whatever the case of its spelling in `headers`."""
    value = headers.get(name)
    if value is not None:
        return value
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def bearer_matches(headers: Mapping[str, str], expected: str) -> bool:
    """True when the Authorization header is ``Bearer <expected>``; the token compared in constant time.

    An empty `expected` never matches, so a provider without a configured token refuses every call.
    """
    value = header(headers, "Authorization")
    if not expected or not value:
        return False
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer":  # RFC 7235: the scheme is case-insensitive
        return False
    return hmac.compare_digest(token.strip().encode("utf-8"), expected.encode("utf-8"))


def dedup_key(source: str, *parts: object) -> str:
    """A key naming one event: readable when short, a hash of the same parts when long."""
    joined = ":".join([source, *(str(p) for p in parts)])
    if len(joined) <= _MAX_DEDUP:
        return joined
    return f"{source}:h:{hashlib.sha256(joined.encode('utf-8')).hexdigest()}"


def utc_from_seconds(value: object, what: str) -> datetime:
    """An aware UTC datetime from Unix seconds in a webhook body; VideoRejected if it is not one."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise VideoRejected(f"{what} is not a Unix time in seconds: {value!r}")
    if not _MIN_TS <= value <= _MAX_TS:
        raise VideoRejected(f"{what} is out of range for Unix seconds: {value!r}")
    return datetime.fromtimestamp(value, tz=timezone.utc)


def utc_from_millis(value: object, what: str) -> datetime:
    """An aware UTC datetime from Unix milliseconds; VideoRejected if it is not one."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise VideoRejected(f"{what} is not a Unix time in milliseconds: {value!r}")
    return utc_from_seconds(value / 1000, what)


def stable_name(key: str, plain: re.Pattern[str], prefix: str, hash_chars: int = 32) -> str:
    """`key` itself when it matches `plain`, else `prefix` + a hash of it: the same every time."""
    if plain.fullmatch(key):
        return key
    return prefix + hashlib.sha256(key.encode("utf-8")).hexdigest()[:hash_chars]


def seconds(moment: datetime) -> int:
    """Whole Unix seconds of an aware datetime (rounded down)."""
    return math.floor(moment.timestamp())
