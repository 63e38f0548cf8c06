"""A throwaway PostgreSQL server for the tests: initdb + pg_ctl on a temp dir and a free loopback port.

Debian's `postgresql` package (scripts/system_deps.sh) provides the binaries. PostgreSQL refuses to run
as root, so as root (CI) the cluster is created and started as the `postgres` user via runuser.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import asyncpg


def find_pg_bin() -> Path | None:
    """The folder holding initdb and pg_ctl, or None."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(os.path.realpath(found)).parent
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.access(Path(candidate) / "initdb", os.X_OK):
            return Path(candidate)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    """Start with `start()`, get fresh databases with `create_database()`, `stop()` removes it all."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.dir = Path(tempfile.mkdtemp(prefix="callgate-pg-"))
        self.data = self.dir / "data"
        self.port = _free_port()
        self.user = "callgate"
        self._as: list[str] = []
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError as e:
                raise RuntimeError("running as root needs a 'postgres' user to run PostgreSQL as") from e
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str) -> None:
        cmd = [*self._as, *args]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed: {result.stderr or result.stdout}")

    def start(self) -> PgServer:
        """initdb (first time only) and start; after `kill()` this restarts the same cluster."""
        if not self.data.exists():
            self._run(
                str(self.bin_dir / "initdb"), "-D", str(self.data), "-U", self.user, "--auth=trust",
                "--encoding=UTF8", "--no-sync", "--locale=C",
            )
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        self._run(
            str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-o", options,
            "-l", str(self.dir / "server.log"), "-w", "-t", "60", "start",
        )
        return self

    def kill(self) -> None:
        """An outage: stop at once (immediate mode, like a crash), keeping the data."""
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def stop(self) -> None:
        try:
            self.kill()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+asyncpg://{self.user}@127.0.0.1:{self.port}/{database}"

    async def create_database(self) -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        name = "t_" + uuid.uuid4().hex[:12]
        conn = await asyncpg.connect(host="127.0.0.1", port=self.port, user=self.user, database="postgres")
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return self.url(name)


_server: PgServer | None = None


def shared_pg_server() -> PgServer | None:
    """One server per test session (started on first use); None when PostgreSQL is not installed."""
    global _server
    if _server is None:
        bin_dir = find_pg_bin()
        if bin_dir is None:
            return None
        _server = PgServer(bin_dir).start()
        import atexit

        atexit.register(_server.stop)
    return _server
