"""Throwaway PostgreSQL for the test suite, chaos runs and benchmarks: the one home of

- `throwaway_database(server_url)`: a database of its own on a server (`CREATE DATABASE`, copied
  from a template or migrated on request), dropped with `FORCE` afterwards;
- `PrivateServer()`: a PostgreSQL server of its own, its data and Unix socket in a fresh temp
  directory (the embedded pgserver binaries, so it needs nothing but the Python package), that
  its owner may stop and start (outage tests) and closes: stopped, directory deleted.

Nothing here touches a server it did not start, or a database it did not create.
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import signal
import tempfile
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo


def url_with_database(url: str, dbname: str) -> str:
    """`url` pointing at database `dbname` (URI or key=value form, kept in its form)."""
    if "://" in url:
        parts = urlsplit(url)
        return urlunsplit(parts._replace(path="/" + dbname))
    return make_conninfo(url, dbname=dbname)


def admin_connection(server_url: str, options: str | None = None) -> psycopg.Connection[Any]:
    """An autocommit connection to the server, for statements about databases."""
    kwargs: dict[str, Any] = {"autocommit": True, "connect_timeout": 10}
    if options:
        kwargs["options"] = options
    return psycopg.connect(server_url, **kwargs)


def create_database(
    server_url: str,
    *,
    prefix: str = "prt",
    template: str = "template0",
    settings: dict[str, str] | None = None,
    options: str | None = None,
) -> str:
    """A new database `<prefix>_<random hex>` on the server, copied from `template`, with
    `ALTER DATABASE ... SET` for each of `settings`; returns its name. `options` are the admin
    connection's (e.g. `-c log_statement=none`)."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    with admin_connection(server_url, options) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template)
            )
        )
        for key, value in (settings or {}).items():
            conn.execute(
                sql.SQL("ALTER DATABASE {} SET {} = {}").format(
                    sql.Identifier(name), sql.Identifier(key), sql.Literal(value)
                )
            )
    return name


def drop_database(server_url: str, name: str, *, options: str | None = None) -> None:
    """Drop a database, disconnecting whoever is still connected to it."""
    with admin_connection(server_url, options) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@dataclass(frozen=True)
class ThrowawayDatabase:
    server_url: str
    name: str

    @property
    def url(self) -> str:
        return url_with_database(self.server_url, self.name)


@contextmanager
def throwaway_database(
    server_url: str,
    *,
    prefix: str = "prt",
    template: str = "template0",
    migrated: bool = False,
    settings: dict[str, str] | None = None,
    options: str | None = None,
    keep: bool = False,
) -> Iterator[ThrowawayDatabase]:
    """A database of its own for the block (see `create_database`), migrated to the current
    schema if `migrated`, dropped at the end unless `keep`."""
    db = ThrowawayDatabase(
        server_url,
        create_database(
            server_url, prefix=prefix, template=template, settings=settings, options=options
        ),
    )
    try:
        if migrated:
            from runtime.migrate import migrate

            kwargs: dict[str, Any] = {"autocommit": True}
            if options:
                kwargs["options"] = options
            with psycopg.connect(db.url, **kwargs) as conn:
                migrate(conn)
        yield db
    finally:
        if not keep:
            drop_database(server_url, db.name, options=options)


class PrivateServer:
    """A PostgreSQL server of its own, in a fresh temp directory of its own (or in `directory`),
    listening on a Unix socket there and on no TCP port, so any number of them (other clones'
    suites included) run side by side. `stop()` is a fast shutdown that keeps the data; `start()`
    brings it back at the same URL; `close()` stops it and deletes the directory.

    Not under pytest's tmp_path: as root the server runs as the `pgserver` user, and every pytest
    start makes /tmp/pytest-of-<user> private again (mode 0700), locking that user out."""

    def __init__(self, directory: Path | None = None) -> None:
        if directory is None:
            directory = Path(tempfile.mkdtemp(prefix="plugin-runtime-pg-")) / "data"
            self._owned: Path | None = directory.parent
        else:
            self._owned = None
        self.directory = Path(directory).resolve()
        self._server: Any = None
        self._url: str | None = None

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("the private PostgreSQL server was never started")
        return self._url

    @property
    def pid(self) -> int | None:
        """The postmaster's pid while it runs (from postmaster.pid), else None."""
        try:
            return int((self.directory / "postmaster.pid").read_text().splitlines()[0])
        except (OSError, ValueError, IndexError):
            return None

    def start(self) -> PrivateServer:
        if self._server is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR
                import pgserver

                # cleanup_mode=None: this object, not pgserver's atexit hook, decides when the
                # server stops and the directory goes.
                self._server = pgserver.get_server(self.directory, cleanup_mode=None)
        else:
            self._server.ensure_postgres_running()
        self._url = str(self._server.get_uri())
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Fast shutdown (SIGINT: sessions are disconnected, nothing is lost); waits for the
        postmaster to exit."""
        pid = self.pid
        if pid is None:
            return
        try:
            os.kill(pid, signal.SIGINT)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        os.kill(pid, signal.SIGKILL)
        raise RuntimeError(
            f"PostgreSQL (pid {pid}) in {self.directory} did not stop in {timeout} s"
        )

    def close(self) -> None:
        """Stop the server and delete its directory."""
        try:
            self.stop()
        finally:
            if self._server is not None:
                import pgserver

                atexit.unregister(self._server._cleanup)
                pgserver.PostgresServer._instances.pop(self.directory, None)
                self._server = None
            shutil.rmtree(self._owned or self.directory, ignore_errors=True)

    def __enter__(self) -> PrivateServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
