"""Bearer API keys and per-key rate limits for every non-Twilio endpoint (FastAPI security dependencies).

Keys come from CALLGATE_API_KEYS; each presented key is compared with every configured key in constant
time (hmac.compare_digest). Keys are never logged: a key is known by `key-<first 8 hex of its SHA-256>`.
Rate limits use the `limits` library (moving window, in memory, per key).

Without keys: dev mode (no TWILIO_AUTH_TOKEN) leaves the control API open, and dev mode only binds
loopback (see callgate.edge.http_limits.check_bind); secure mode refuses the control API entirely.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from typing import Annotated

from fastapi import Depends, HTTPException, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from limits import parse_many
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from callgate.edge.rejections import Rejections
from callgate.settings import Settings

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="CallgateApiKey",
    description="One of CALLGATE_API_KEYS (or CALLGATE_METRICS_KEYS for /metrics), as `Authorization: Bearer <key>`.",
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]
DEV_KEY_ID = "dev-open"


def key_id(key: str) -> str:
    """How a key appears in logs and limiter buckets (never the key itself)."""
    return "key-" + hashlib.sha256(key.encode()).hexdigest()[:8]


def _matches(presented: str, keys: list[str]) -> str | None:
    """The matching key's id, comparing against every key in constant time."""
    found = None
    for key in keys:
        if hmac.compare_digest(presented.encode(), key.encode()):
            found = key
    return key_id(found) if found is not None else None


class ApiGuard:
    """Builds the dependencies server.py puts on its control routes."""

    def __init__(self, settings: Settings, reject: Rejections) -> None:
        self.api_keys = settings.api_key_list
        self.metrics_keys = settings.metrics_key_list
        self.open = settings.dev_mode and not self.api_keys
        self.reject = reject
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._api_limits = parse_many(settings.api_rate_limit)
        self._place_limits = parse_many(settings.place_call_rate_limit)

    def _authenticate(self, credentials: HTTPAuthorizationCredentials | None, keys: list[str]) -> str:
        if self.open:
            return DEV_KEY_ID
        if not self.api_keys and not keys:
            self.reject("api_disabled", "control API called but CALLGATE_API_KEYS is not set")
            raise HTTPException(status_code=503, detail="control API disabled: set CALLGATE_API_KEYS")
        if credentials is None or credentials.scheme.lower() != "bearer":
            self.reject("api_key", "missing bearer API key")
            raise HTTPException(status_code=401, detail="API key required", headers={"WWW-Authenticate": "Bearer"})
        kid = _matches(credentials.credentials, keys)
        if kid is None:
            self.reject("api_key", "unknown API key")
            raise HTTPException(status_code=401, detail="invalid API key", headers={"WWW-Authenticate": "Bearer"})
        return kid

    def _hit(self, kid: str, items, scope: str) -> None:
        for item in items:
            if not self._limiter.hit(item, scope, kid):
                stats = self._limiter.get_window_stats(item, scope, kid)
                retry = max(1, math.ceil(stats.reset_time - time.time()))
                self.reject("rate_limited", f"{kid} over {item} on {scope}")
                raise HTTPException(
                    status_code=429, detail=f"rate limit {item} exceeded", headers={"Retry-After": str(retry)}
                )

    async def api_key(self, credentials: Credentials) -> str:
        """Dependency: a valid API key within API_RATE_LIMIT; returns its key id."""
        kid = self._authenticate(credentials, self.api_keys)
        self._hit(kid, self._api_limits, "api")
        return kid

    async def place_call_key(self, credentials: Credentials) -> str:
        """Dependency for POST /calls: api_key plus PLACE_CALL_RATE_LIMIT."""
        kid = await self.api_key(credentials)
        self._hit(kid, self._place_limits, "place_call")
        return kid

    async def metrics_key(self, credentials: Credentials) -> str:
        """Dependency for /metrics: a metrics key or an API key."""
        kid = self._authenticate(credentials, self.metrics_keys + self.api_keys)
        self._hit(kid, self._api_limits, "metrics")
        return kid

    @property
    def require_api(self):
        return Depends(self.api_key)

    @property
    def require_place_call(self):
        return Depends(self.place_call_key)

    @property
    def require_metrics(self):
        return Depends(self.metrics_key)
