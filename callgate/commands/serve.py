"""Run the server (the Twilio webhook and Media Streams endpoint), in one or several worker processes.

`--workers N` (default: one per core) starts N processes on one listening socket; what they must
agree on (Stream-token single use, campaign claims, call records) lives in the database. SIGTERM
drains every worker (see callgate/drain.py); a worker that dies is restarted unless the server is
draining.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import tempfile
import time
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", help="bind address (default: HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default: PORT or 8080)")
    parser.add_argument(
        "--workers", type=int, help=f"worker processes (default: one per core, here {os.cpu_count() or 1})"
    )


def run(args: argparse.Namespace) -> int:
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
    from callgate.edge.http_limits import check_bind

    try:
        check_bind(settings)
    except ValueError as e:
        raise CliError(str(e)) from e
    workers = args.workers if args.workers is not None else (os.cpu_count() or 1)
    if workers < 1:
        raise CliError(f"--workers must be at least 1, got {workers}")
    if workers == 1:
        serve_worker(settings)
        return 0
    return supervise(settings, workers)


def _uvicorn_config(app: Any, settings: Any):
    import uvicorn

    from callgate.edge.http_limits import uvicorn_options

    reject = app.state.callgate.reject if app is not None else None
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=10,
        **uvicorn_options(settings, reject),
    )


def serve_worker(settings: Any, sockets: list[socket.socket] | None = None) -> None:
    """One server process: the app on a DrainingServer (SIGTERM drains)."""
    import server
    from callgate.drain import DrainingServer

    server.configure_logging(settings.log_level)
    app = server.create_app(settings)
    DrainingServer(_uvicorn_config(app, settings), app.state.callgate.drain).run(sockets=sockets)


def _worker_main(settings: Any, sock: socket.socket) -> None:
    serve_worker(settings, sockets=[sock])


def supervise(settings: Any, workers: int) -> int:
    """Start `workers` processes on one socket, forward SIGTERM/SIGINT to them, restart the ones that die."""
    import asyncio
    import multiprocessing

    from loguru import logger

    import server
    from callgate.metrics import mark_process_dead
    from callgate.store import CallStore

    server.configure_logging(settings.log_level)
    # Migrate once here, so the workers start on a ready schema (they would each wait on the lock).
    try:
        asyncio.run(_migrate(CallStore, settings.db_url))
    except Exception as e:
        logger.error(f"call-record database unavailable at start-up: {e}")
    # One metrics view over all workers: prometheus-client's multiprocess mode, set before they start.
    own_mp_dir = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")  # ours to remove when the workers are gone
    if own_mp_dir:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="callgate-metrics-")
    mp_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    os.makedirs(mp_dir, exist_ok=True)
    for name in os.listdir(mp_dir):
        if name.endswith(".db"):
            os.unlink(os.path.join(mp_dir, name))

    sock = _uvicorn_config(None, settings).bind_socket()
    ctx = multiprocessing.get_context("spawn")
    procs: list[multiprocessing.process.BaseProcess] = []
    draining = {"sig": None}

    started: dict[int, float] = {}
    quick_deaths = 0

    def spawn() -> None:
        p = ctx.Process(target=_worker_main, args=(settings, sock), daemon=False)
        p.start()
        procs.append(p)
        started[p.pid or 0] = time.monotonic()

    def on_signal(sig: int, _frame: Any) -> None:
        draining["sig"] = sig
        for p in procs:
            if p.is_alive() and p.pid:
                os.kill(p.pid, sig)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for _ in range(workers):
        spawn()
    logger.info(f"callgate: {workers} workers on {settings.host}:{settings.port} (pids {[p.pid for p in procs]})")
    while procs:
        time.sleep(0.2)
        for p in [p for p in procs if not p.is_alive()]:
            p.join()
            procs.remove(p)
            if p.pid:
                mark_process_dead(p.pid)
            if draining["sig"] is None:
                lived = time.monotonic() - started.pop(p.pid or 0, 0.0)
                quick_deaths = quick_deaths + 1 if lived < 10 else 0
                if quick_deaths >= 3 * workers:
                    logger.error("workers keep dying at start-up; giving up")
                    on_signal(signal.SIGINT, None)
                    draining["sig"] = signal.SIGINT
                    continue
                logger.error(f"worker {p.pid} exited ({p.exitcode}) after {lived:.0f} s; starting another")
                spawn()
    sock.close()
    if own_mp_dir:
        shutil.rmtree(mp_dir, ignore_errors=True)
    logger.info("callgate: all workers have exited")
    return 1 if quick_deaths >= 3 * workers else 0


async def _migrate(store_cls: Any, url: str) -> None:
    from callgate.store.migrate import migrate

    store = store_cls(url)
    try:
        await migrate(store.engine)
    finally:
        await store.engine.dispose()
