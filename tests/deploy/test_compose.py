"""docker-compose.yml runs callgate the production way: PostgreSQL records, readiness healthcheck, and a
stop grace period longer than the drain, so `docker compose stop` never cuts a call."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from callgate.settings import Settings

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"


def _secs(value: str) -> float:
    m = re.fullmatch(r"(\d+)(s|m)", value)
    assert m, value
    return int(m.group(1)) * (60 if m.group(2) == "m" else 1)


def test_compose_has_postgres_healthcheck_and_a_grace_period_longer_than_the_drain():
    spec = yaml.safe_load(COMPOSE.read_text())
    app, pg = spec["services"]["callgate"], spec["services"]["postgres"]
    env = app["environment"]
    assert env["DATABASE_URL"].startswith("postgresql+asyncpg://") and "@postgres:5432/" in env["DATABASE_URL"]
    assert app["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "pg_isready" in " ".join(pg["healthcheck"]["test"])
    assert "/readyz" in " ".join(app["healthcheck"]["test"])
    drain = float(re.search(r":-(\d+)", env["DRAIN_TIMEOUT_SECS"]).group(1))
    assert drain == Settings(_env_file=None).drain_timeout_secs
    assert _secs(app["stop_grace_period"]) >= drain + 15
    assert "--workers" in app["command"]
