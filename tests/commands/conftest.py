"""The CLI tests drive the real server: they share its fixture."""

from tests.server.conftest import server_factory  # noqa: F401 (a fixture)
