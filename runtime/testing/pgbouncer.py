"""A PgBouncer of its own, in transaction pooling mode, for the test suite, chaos runs and benchmarks.

    with PgBouncer(server_url) as bouncer:      # started on a free port of 127.0.0.1
        pooled = bouncer.url_for(database_url)  # the same database, through the pooler

It is the system's PgBouncer binary (Debian's `pgbouncer` package; `.ci/run` installs it), run
as a child process with its config and auth file in a fresh temp directory of its own; it serves
every database of the server (`* =`), and `close()` stops it and deletes the directory. The
system's pgbouncer service is never touched.

Transaction pooling is the mode that breaks what needs a session: between two transactions a
client's server connection goes back to the pool, so LISTEN, session advisory locks, `SET` and
server-side prepared statements do not outlive the statement that made them. `default_pool_size`
is small on purpose, so that clients really share server connections.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlunsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

PGBOUNCER_ENV = "PLUGIN_RUNTIME_PGBOUNCER"  # path of the binary, when not on PATH or /usr/sbin


def pgbouncer_binary() -> str | None:
    """The PgBouncer binary: $PLUGIN_RUNTIME_PGBOUNCER, else on PATH, else Debian's /usr/sbin."""
    explicit = os.environ.get(PGBOUNCER_ENV)
    if explicit:
        return explicit
    return shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if os.access("/usr/sbin/pgbouncer", os.X_OK) else None
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _unprivileged_user(host: str) -> str:
    """Whom PgBouncer runs as when started by root (it refuses to run as root): the owner of
    the server's Unix socket directory, who may connect to it (a private test server runs as
    its own user), else `nobody`."""
    if host.startswith("/"):
        try:
            owner = Path(host).stat().st_uid
            if owner != 0:
                return pwd.getpwuid(owner).pw_name
        except (OSError, KeyError):
            pass
    return "nobody"


class PgBouncer:
    """PgBouncer in front of the PostgreSQL server at `server_url` (any database on it), in
    `pool_mode` (transaction by default), listening on 127.0.0.1 only."""

    def __init__(
        self, server_url: str, *, pool_mode: str = "transaction", pool_size: int = 4
    ) -> None:
        binary = pgbouncer_binary()
        if binary is None:
            raise RuntimeError(
                "PgBouncer is not installed: apt-get install -y pgbouncer "
                f"(or set ${PGBOUNCER_ENV} to its binary)"
            )
        self.binary = binary
        self.server_url = server_url
        self.pool_mode = pool_mode
        self.pool_size = pool_size
        self.port = 0
        self.directory: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def _server(self) -> dict[str, Any]:
        params = conninfo_to_dict(self.server_url)
        return {
            "host": str(params.get("host") or "127.0.0.1"),
            "port": str(params.get("port") or "5432"),
            "user": str(params.get("user") or "postgres"),
            "password": str(params.get("password") or ""),
        }

    def start(self, timeout: float = 15.0) -> PgBouncer:
        server = self._server()
        # Not under pytest's tmp_path: as root PgBouncer drops to `nobody`, which must read
        # this directory (pytest makes its own private).
        self.directory = Path(tempfile.mkdtemp(prefix="plugin-runtime-pgbouncer-"))
        self.directory.chmod(0o755)
        self.port = free_port()
        users = self.directory / "userlist.txt"
        users.write_text(f'"{server["user"]}" "{server["password"]}"\n')
        target = f"host={server['host']} port={server['port']} user={server['user']}"
        if server["password"]:
            target += f" password={server['password']}"
        config = self.directory / "pgbouncer.ini"
        lines = [
            "[databases]",
            f"* = {target}",
            "[pgbouncer]",
            "listen_addr = 127.0.0.1",
            f"listen_port = {self.port}",
            "unix_socket_dir =",
            "auth_type = trust",
            f"auth_file = {users}",
            f"pool_mode = {self.pool_mode}",
            f"default_pool_size = {self.pool_size}",
            "max_client_conn = 500",
            # psycopg sends none of these by default; a benchmark's `options` would be refused
            "ignore_startup_parameters = extra_float_digits,options",
            "server_login_retry = 1",
            "admin_users = " + server["user"],
        ]
        if os.geteuid() == 0:
            lines.append(f"user = {_unprivileged_user(server['host'])}")
        config.write_text("\n".join(lines) + "\n")
        users.chmod(0o644)
        config.chmod(0o644)
        self._log = open(self.directory / "pgbouncer.log", "ab")  # noqa: SIM115 - closed in close()
        self.process = subprocess.Popen(
            [self.binary, str(config)], stdout=self._log, stderr=self._log, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                log = self.log_text()
                self.close()
                raise RuntimeError(f"PgBouncer exited at start:\n{log}")
            try:
                with psycopg.connect(self.url_for(self.server_url), connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return self
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    log = self.log_text()
                    self.close()
                    raise RuntimeError(f"PgBouncer did not answer in {timeout} s:\n{log}") from exc
                time.sleep(0.1)

    def url_for(self, database_url: str) -> str:
        """`database_url` (a database on this server) reached through this PgBouncer."""
        params = conninfo_to_dict(database_url)
        dbname = str(params.get("dbname") or "postgres")
        user = str(params.get("user") or "postgres")
        if "://" in database_url:
            netloc = f"{user}@127.0.0.1:{self.port}"
            return urlunsplit(("postgresql", netloc, "/" + dbname, "", ""))
        return make_conninfo(host="127.0.0.1", port=str(self.port), dbname=dbname, user=user)

    def admin(self, command: str) -> list[tuple[Any, ...]]:
        """Run an admin console command (e.g. `SHOW POOLS`) and return its rows."""
        user = self._server()["user"]
        url = f"postgresql://{user}@127.0.0.1:{self.port}/pgbouncer"
        with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
            cur = conn.execute(command.encode())  # simple query protocol: the console needs it
            return list(cur.fetchall()) if cur.description else []

    def log_text(self) -> str:
        if self.directory is None:
            return ""
        path = self.directory / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def close(self, timeout: float = 10.0) -> None:
        """Stop PgBouncer (SIGINT: safe shutdown, clients cut) and delete its directory."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def __enter__(self) -> PgBouncer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
