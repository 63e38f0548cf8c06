"""Run the server (the Twilio webhook and Media Streams endpoint)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="bind address (default: HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: PORT or 8080)")


def run(args: argparse.Namespace) -> int:
    import uvicorn
    from pydantic import ValidationError

    from callgate.cli import CliError
    from callgate.settings import Settings

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    try:
        settings = Settings(**overrides)
    except ValidationError as e:
        first = e.errors()[0]
        where = f"{first['loc'][0]}: " if first["loc"] else ""
        raise CliError(f"bad configuration: {where}{first['msg']}") from e

    from callgate.edge.http_limits import check_bind, uvicorn_options

    try:
        check_bind(settings)
    except ValueError as e:
        raise CliError(str(e)) from e

    import server

    server.configure_logging(settings.log_level)
    app = server.create_app(settings)
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        **uvicorn_options(settings, app.state.callgate.reject),
    )
    return 0
