"""Where callgate may send a signed request of its own: the Twilio AMD drop-in's AnsweredBy callback.

The caller of POST /calls chooses that URL, and callgate signs the request with the Twilio auth token. A
URL on this machine or inside its network (an admin port on localhost, cloud metadata at 169.254.169.254)
would turn an API key into a way to reach what the internet cannot reach. So the callback's host must
resolve to public addresses only, unless CALLBACK_PRIVATE_HOSTS is set (local development, tests).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from callgate.edge.call_options import OptionError

RESOLVE_TIMEOUT_SECS = 5.0


def _public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])  # an IPv6 zone id is not part of the address
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def check_callback_url(url: str, *, private_ok: bool) -> None:
    """OptionError (safe to show the API caller) unless `url`'s host resolves to public addresses only."""
    if private_ok:
        return
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as e:
        raise OptionError(f"AsyncAmdStatusCallback has a bad port: {e}") from e
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, port, type=socket.SOCK_STREAM), RESOLVE_TIMEOUT_SECS
        )
    except (OSError, TimeoutError) as e:
        raise OptionError(f"AsyncAmdStatusCallback host {host!r} does not resolve") from e
    private = sorted({str(info[4][0]) for info in infos if not _public(str(info[4][0]))})
    if private:
        raise OptionError(
            f"AsyncAmdStatusCallback host {host!r} resolves to a non-public address ({', '.join(private)}); "
            "set CALLBACK_PRIVATE_HOSTS=1 to allow it (local development)"
        )
