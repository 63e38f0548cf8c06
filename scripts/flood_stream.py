"""A hostile Media Stream for load tests: signed like Twilio, then valid 20 ms frames as fast as the socket
takes them; when the server closes it, it comes back with a fresh call, until --secs have passed.

    python scripts/flood_stream.py --url http://127.0.0.1:8080 --auth-token T --account-sid AC... --secs 10

Prints one line per stream: messages sent and the server's close code. Loopback use only.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import time

import httpx
import websockets
from twilio.request_validator import RequestValidator

from callgate.audio import pcm_to_ulaw
from simulator.phone import StreamClient, parse_twiml

FRAME = pcm_to_ulaw(b"\x00\x00" * 160)


async def flood_once(url: str, auth_token: str, account_sid: str, deadline: float) -> tuple[int, int | None]:
    call_sid = "CA" + secrets.token_hex(16)
    params = {"CallSid": call_sid, "AccountSid": account_sid, "From": "+12025550100", "To": "+12025550101"}
    signature = RequestValidator(auth_token).compute_signature(f"{url}/twiml", params)
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{url}/twiml", data=params, headers={"X-Twilio-Signature": signature})
    response.raise_for_status()
    twiml = parse_twiml(response.text)
    client = await StreamClient.connect(twiml.url, auth_token=auth_token, call_sid=call_sid, account_sid=account_sid)
    await client.send_connected()
    await client.send_start(twiml.parameters)
    sent = 0
    try:
        while time.monotonic() < deadline:
            await client.send_media(FRAME)
            sent += 1
            if sent % 100 == 0:
                await asyncio.sleep(0)  # let the close frame in
    except websockets.ConnectionClosed:
        pass
    finally:
        await client.close()
    return sent, client.close_code


async def main(args: argparse.Namespace) -> None:
    deadline = time.monotonic() + args.secs
    while time.monotonic() < deadline:
        sent, code = await flood_once(args.url.rstrip("/"), args.auth_token, args.account_sid, deadline)
        print(f"flood stream: {sent} messages, closed with {code}", flush=True)
        await asyncio.sleep(min(args.pause, max(0.0, deadline - time.monotonic())))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the server's base URL (its PUBLIC_BASE_URL)")
    parser.add_argument("--auth-token", required=True)
    parser.add_argument("--account-sid", required=True)
    parser.add_argument("--secs", type=float, default=10.0)
    parser.add_argument("--pause", type=float, default=0.0, help="seconds between one stream's close and the next")
    asyncio.run(main(parser.parse_args()))
