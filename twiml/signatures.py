"""X-Twilio-Signature checks for the webhook and the WebSocket upgrade, using twilio's RequestValidator.

The URL is rebuilt from the configured PUBLIC_BASE_URL, never from the Host header: behind ngrok or a
proxy the Host the server sees is not the URL Twilio signed.
"""

from __future__ import annotations

from collections.abc import Mapping

from twilio.request_validator import RequestValidator


class SignatureChecker:
    """Validates Twilio signatures against the public URL; a checker without a token accepts everything."""

    def __init__(self, auth_token: str | None, public_base_url: str) -> None:
        self._validator = RequestValidator(auth_token) if auth_token else None
        self.public_base_url = public_base_url.rstrip("/")

    @property
    def enforced(self) -> bool:
        return self._validator is not None

    def public_url(self, path: str, query: str = "", *, websocket: bool = False) -> str:
        """The URL Twilio called: public base + path (+ query); ws(s):// for the Stream upgrade."""
        base = self.public_base_url
        if websocket:
            base = base.replace("https://", "wss://", 1).replace("http://", "ws://", 1)
        return f"{base}{path}" + (f"?{query}" if query else "")

    def check_webhook(self, path: str, query: str, params: Mapping[str, str], signature: str | None) -> bool:
        if self._validator is None:
            return True
        if not signature:
            return False
        return self._validator.validate(self.public_url(path, query), dict(params), signature)

    def check_websocket(self, path: str, signature: str | None) -> bool:
        if self._validator is None:
            return True
        if not signature:
            return False
        return self._validator.validate(self.public_url(path, websocket=True), {}, signature)
