"""Single-use, short-lived Stream tokens bound to a CallSid.

Twilio's signatures carry no timestamp, so a captured Stream URL could be replayed. The token in the
path (`/ws/<token>`) is an HMAC-signed, timestamped CallSid (itsdangerous) that the server accepts once.
"""

from __future__ import annotations

import secrets
import threading

from cachetools import TTLCache
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer


class TokenError(Exception):
    """Why a Stream token was refused (unknown, expired, reused)."""


class StreamTokens:
    """Issues and redeems Stream tokens; redeemed nonces are remembered until they would expire anyway."""

    def __init__(self, secret: str | None, ttl_secs: float = 60.0, max_live: int = 100_000) -> None:
        self._serializer = URLSafeTimedSerializer(secret or secrets.token_hex(32), salt="callgate-stream")
        self.ttl_secs = ttl_secs
        self._used: TTLCache[str, bool] = TTLCache(maxsize=max_live, ttl=ttl_secs + 5)
        self._lock = threading.Lock()

    def issue(self, call_sid: str) -> str:
        """A fresh token for this CallSid."""
        return self._serializer.dumps({"sid": call_sid, "n": secrets.token_urlsafe(9)})

    def redeem(self, token: str) -> str:
        """Validate and consume a token; returns the CallSid it is bound to."""
        try:
            data = self._serializer.loads(token, max_age=self.ttl_secs)
        except SignatureExpired as e:
            raise TokenError("expired stream token") from e
        except BadSignature as e:
            raise TokenError("unknown stream token") from e
        if not isinstance(data, dict) or "sid" not in data or "n" not in data:
            raise TokenError("malformed stream token")
        with self._lock:
            if data["n"] in self._used:
                raise TokenError("stream token already used")
            self._used[data["n"]] = True
        return str(data["sid"])
