"""A client of callgate's control API, as a team's own application would be one."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx


async def wait_for_record(base_url: str, call_sid: str, api_key: str, timeout_s: float = 10.0) -> dict[str, Any]:
    """The call's record from GET /calls/{sid} once it is completed ({} if it is not by timeout_s)."""
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {api_key}"}) as client:
        for _ in range(max(1, int(timeout_s / 0.1))):
            r = await client.get(f"{base_url}/calls/{call_sid}")
            if r.status_code == 200 and r.json()["status"] == "completed":
                return r.json()
            await asyncio.sleep(0.1)
    return {}
