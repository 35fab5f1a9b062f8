"""The W3C `traceparent` a create may carry (SPEC section 13): what of it is kept with the
task. Apart from shared/tracing.py, which the create path does not need."""

from __future__ import annotations

import re

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
MAX_HEADER_CHARS = 512  # longer is not a traceparent we keep (what we keep is 55 chars)


def valid_traceparent(value: str | bytes | None) -> str | None:
    """`value` as the 55-character version-00 traceparent to store, or None when it is absent
    or malformed (a create is never refused for it; W3C says to ignore such a header)."""
    if not value or len(value) > MAX_HEADER_CHARS:
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    match = _TRACEPARENT.fullmatch(text.strip())
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest):
        return None
    if not int(trace_id, 16) or not int(span_id, 16):  # all zeros: invalid
        return None
    return f"00-{trace_id}-{span_id}-{flags}"
