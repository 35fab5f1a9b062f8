"""API keys (SPEC section 2): which role a presented key has, compared in constant time."""

from __future__ import annotations

import hmac
from typing import Literal

from shared.settings import Settings

Role = Literal["admin", "read"]


def auth_enabled(settings: Settings) -> bool:
    return bool(settings.api_key_list or settings.api_read_key_list)


def matching_key(candidate: str, keys: list[str]) -> str | None:
    """The key equal to `candidate`; every key is compared, so timing reveals nothing."""
    found = None
    for key in keys:
        if hmac.compare_digest(candidate.encode(), key.encode()):
            found = key
    return found


def role_for_key(settings: Settings, candidate: str) -> Role | None:
    """`admin` for a key in API_KEYS, `read` for one in API_READ_KEYS, else None."""
    if matching_key(candidate, settings.api_key_list):
        return "admin"
    if matching_key(candidate, settings.api_read_key_list):
        return "read"
    return None
