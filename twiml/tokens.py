"""Single-use, short-lived Stream tokens that bind everything the webhook decided about a call.

Twilio's signatures carry no timestamp, so a captured Stream URL could be replayed, and `start`'s
customParameters come from the client. The token in the path (`/ws/<token>`) is an HMAC-signed,
timestamped record (itsdangerous) of the CallSid, the AccountSid and the options the webhook chose
(workflow, message, agent); `start` must match it, and its nonce is claimed once in a UsedTokenStore
that outlives the process.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from twiml.token_store import MemoryTokenStore, UsedTokenStore


class TokenError(Exception):
    """Why a Stream token was refused (unknown, expired, reused)."""


@dataclass(frozen=True)
class StreamGrant:
    """What a redeemed token allows: this call, of this account, with exactly these options."""

    call_sid: str
    account_sid: str = ""
    options: dict[str, str] = field(default_factory=dict)

    def mismatch(self, call_sid: str, account_sid: str, parameters: dict[str, str], names: tuple[str, ...]) -> str:
        """Why `start` does not match the grant ("" when it does)."""
        if call_sid != self.call_sid:
            return "callSid does not match the webhook"
        if self.account_sid and account_sid != self.account_sid:
            return "accountSid does not match the webhook"
        for name in sorted(set(names) | set(self.options)):
            if parameters.get(name) != self.options.get(name):
                return f"parameter {name!r} does not match the webhook"
        return ""


class StreamTokens:
    """Issues and redeems Stream tokens; redeemed nonces are claimed in `store` until they would expire."""

    def __init__(self, secret: str | None, ttl_secs: float = 60.0, store: UsedTokenStore | None = None) -> None:
        self._serializer = URLSafeTimedSerializer(secret or secrets.token_hex(32), salt="callgate-stream")
        self.ttl_secs = ttl_secs
        self.store = store or MemoryTokenStore()

    def issue(self, call_sid: str, account_sid: str = "", options: dict[str, str] | None = None) -> str:
        """A fresh token for this call and the options the webhook chose."""
        return self._serializer.dumps(
            {"sid": call_sid, "acc": account_sid, "opt": dict(options or {}), "n": secrets.token_urlsafe(12)}
        )

    async def redeem(self, token: str) -> StreamGrant:
        """Validate and consume a token."""
        try:
            data, issued = self._serializer.loads(token, max_age=self.ttl_secs, return_timestamp=True)
        except SignatureExpired as e:
            raise TokenError("expired stream token") from e
        except BadSignature as e:
            raise TokenError("unknown stream token") from e
        if not isinstance(data, dict) or not {"sid", "acc", "opt", "n"} <= data.keys():
            raise TokenError("malformed stream token")
        if not await self.store.claim(str(data["n"]), issued.timestamp() + self.ttl_secs + 5):
            raise TokenError("stream token already used")
        return StreamGrant(str(data["sid"]), str(data["acc"]), {str(k): str(v) for k, v in data["opt"].items()})
