"""The AnsweredBy callback may only go to public hosts: an API key must not reach the server's own
network through a signed request (localhost ports, cloud metadata)."""

from __future__ import annotations

import pytest

from callgate.edge.call_options import OptionError
from callgate.edge.callbacks import check_callback_url


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/admin",
        "http://localhost/amd",
        "http://169.254.169.254/latest/meta-data/",
        "https://10.0.0.7/amd",
        "http://[::1]:9000/amd",
        "http://[::ffff:127.0.0.1]/amd",
        "http://0.0.0.0/amd",
    ],
)
async def test_a_callback_to_this_machine_or_its_network_is_refused_naming_the_address(url):
    with pytest.raises(OptionError, match="non-public address"):
        await check_callback_url(url, private_ok=False)


async def test_a_public_callback_passes_and_private_ones_pass_when_allowed():
    await check_callback_url("https://93.184.215.14/amd?x=1", private_ok=False)
    await check_callback_url("http://127.0.0.1:8080/amd", private_ok=True)


async def test_a_bad_port_is_a_clear_error():
    with pytest.raises(OptionError, match="bad port"):
        await check_callback_url("http://example.com:99999/amd", private_ok=False)
