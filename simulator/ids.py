"""Twilio-shaped identifiers (shared by the phone and the REST stand-in, so neither imports the other)."""

from __future__ import annotations

import secrets


def new_sid(prefix: str) -> str:
    """A Twilio-shaped SID: two-letter prefix + 32 lowercase hex digits."""
    return prefix + secrets.token_hex(16)
