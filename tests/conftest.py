"""Shared fixtures: a real PostgreSQL per test, and the real command line.

- `postgres_server_url`: the server the tests use — $PLUGIN_RUNTIME_TEST_DATABASE_URL when set
  (CI: postgresql://postgres@127.0.0.1:5432/postgres), else a private server of this run's own
  (runtime.testing.postgres.PrivateServer: embedded pgserver binaries, data and socket in a fresh
  temp directory), started on first use and stopped and deleted at the end of the session.
- `database_url`: a fresh, migrated database of its own for each test, copied from a template
  migrated once per session (CREATE DATABASE ... TEMPLATE is fast), dropped afterwards.
- `empty_database_url`: a fresh database with no schema at all (for migration tests).
- `pgbouncer`: a PgBouncer of this session's own in transaction pooling mode in front of that
  server (runtime.testing.pgbouncer; `pgbouncer.url_for(database_url)` is the pooled URL of a
  test's database), started on first use, stopped at the end of the session.
- `db`: an open autocommit connection (rows as dicts) to `database_url`.
- `cli_runner`: runs `python -m runtime ARGS... --database-url URL` in a subprocess.
- `test_plugins_dir`: tests/plugins (small plugins made for the tests, e.g. `tiny`).
- At the end of the session nothing it started may still run (tests/leftovers.py): a leftover
  process fails the session and is killed.
- `sandbox`: a started, plain `Sandbox()` (default services, unrestricted runs refused), one per
  test module; `start_sandbox(**options)` starts one with other options, closed at module end.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from leftovers import MARK_ENV, find_leftovers, fork_servers, kill

from runtime.db import ENV_DATA_DIR, ENV_DATABASE_URL, connect
from runtime.testing.pgbouncer import PgBouncer
from runtime.testing.postgres import PrivateServer, throwaway_database
from sandbox import Sandbox

_FORK_SERVERS_BEFORE = pytest.StashKey[set[int]]()
_STARTED_AT = pytest.StashKey[float]()

TEST_DATABASE_ENV = "PLUGIN_RUNTIME_TEST_DATABASE_URL"
TESTS_DIR = Path(__file__).resolve().parent
REPO_ROOT = TESTS_DIR.parent
TEST_PLUGINS_DIR = TESTS_DIR / "plugins"
# Directories of this session whose processes must be gone at its end (see tests/leftovers.py).
SESSION_DIRS: list[Path] = []


def pytest_configure(config: pytest.Config) -> None:
    """Mark everything this session starts (inherited through the environment), and note the
    fork servers of this checkout already running, before any test starts a process."""
    os.environ[MARK_ENV] = secrets.token_hex(8)
    config.stash[_FORK_SERVERS_BEFORE] = fork_servers(REPO_ROOT)
    config.stash[_STARTED_AT] = time.time()
    # A command run without a database URL starts the embedded server in the user's data
    # directory, one per user: in a test it gets a directory of this session instead, so no
    # clone's suite ever shares (or leaves behind) the user's server.
    data_home = Path(tempfile.mkdtemp(prefix="plugin-runtime-test-data-"))
    os.environ[ENV_DATA_DIR] = str(data_home / "pgdata")
    SESSION_DIRS.append(data_home)


@pytest.hookimpl(trylast=True)  # after the session's fixtures (its PostgreSQL) are torn down
def pytest_sessionfinish(session: pytest.Session) -> None:
    """The suite leaves nothing running: a process it left fails the session, and is killed."""
    try:
        _report_leftovers(session)
    finally:
        shutil.rmtree(Path(os.environ[ENV_DATA_DIR]).parent, ignore_errors=True)


def _report_leftovers(session: pytest.Session) -> None:
    found = find_leftovers(
        mark=os.environ[MARK_ENV],
        directories=SESSION_DIRS,
        repo_root=REPO_ROOT,
        fork_servers_before=session.config.stash.get(_FORK_SERVERS_BEFORE, set()),
        started_at=session.config.stash.get(_STARTED_AT, 0.0),
    )
    if not found:
        return
    kill(found)
    writer = session.config.get_terminal_writer()
    writer.line()
    writer.line(f"FAILED: the test session left {len(found)} process(es) running:", red=True)
    for leftover in found:
        writer.line("  " + leftover.line(), red=True)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session", autouse=True)
def _session_temp_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    """pytest's temp directory of this session: a process started from it must be gone at the
    end (e.g. a PostgreSQL a test started in its tmp_path)."""
    SESSION_DIRS.append(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """URL of the PostgreSQL server the tests create their databases on: $PLUGIN_RUNTIME_TEST_DATABASE_URL,
    else a private server of this run's own, in a fresh temp directory, stopped and deleted at the
    end of the session (so clones of the project never share or leave one)."""
    from_env = os.environ.get(TEST_DATABASE_ENV)
    if from_env:
        yield from_env
        return
    server = PrivateServer()
    SESSION_DIRS.append(server.directory)
    try:
        yield server.start().url
    finally:
        server.close()


@pytest.fixture(scope="session")
def pgbouncer(postgres_server_url: str) -> Iterator[PgBouncer]:
    """PgBouncer in transaction pooling mode in front of the test server, for this session."""
    bouncer = PgBouncer(postgres_server_url)
    try:
        yield bouncer.start()
    finally:
        bouncer.close()


@pytest.fixture(scope="session")
def migrated_template(postgres_server_url: str) -> Iterator[str]:
    """Name of a database migrated once for the session, that test databases are copied from."""
    with throwaway_database(postgres_server_url, migrated=True) as template:
        yield template.name


@pytest.fixture
def database_url(postgres_server_url: str, migrated_template: str) -> Iterator[str]:
    """URL of a clean, migrated database of this test's own."""
    with throwaway_database(postgres_server_url, template=migrated_template) as db:
        yield db.url


@pytest.fixture
def empty_database_url(postgres_server_url: str) -> Iterator[str]:
    """URL of a database of this test's own with no schema (not migrated)."""
    with throwaway_database(postgres_server_url) as db:
        yield db.url


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection (rows as dicts) to this test's database."""
    conn = connect(database_url)
    try:
        yield conn
    finally:
        conn.close()


@pytest.fixture
def test_plugins_dir() -> Path:
    return TEST_PLUGINS_DIR


@pytest.fixture(scope="module")
def start_sandbox() -> Iterator[Callable[..., Sandbox]]:
    """Starts `Sandbox(**options)` (a real fork server); every one is closed at module end."""
    started: list[Sandbox] = []

    def start(**options: Any) -> Sandbox:
        sb = Sandbox(**options)
        started.append(sb)
        return sb.start()

    try:
        yield start
    finally:
        for sb in reversed(started):
            sb.close()


@pytest.fixture(scope="module")
def sandbox(start_sandbox: Callable[..., Sandbox]) -> Sandbox:
    """A plain sandbox shared by the module's tests (a module may override it with options)."""
    return start_sandbox()


@dataclass
class CliRunner:
    """Runs the real console command (`python -m runtime`) in a subprocess.

    `--database-url URL` is appended unless `database_url=None` is given to the runner or call.
    The environment never carries $PLUGIN_RUNTIME_DATABASE_URL unless `env` sets it."""

    database_url: str | None
    cwd: Path

    def command(self, *args: Any, database_url: str | None | bool = True) -> list[str]:
        url = self.database_url if database_url is True else database_url or None
        cmd = [sys.executable, "-m", "runtime", *(str(a) for a in args)]
        if url:
            cmd += ["--database-url", url]
        return cmd

    def environment(self, env: Mapping[str, str] | None = None) -> dict[str, str]:
        full = {k: v for k, v in os.environ.items() if k != ENV_DATABASE_URL}
        full.update(env or {})
        return full

    def __call__(
        self,
        *args: Any,
        input: str | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = 60,
        database_url: str | None | bool = True,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(*args, database_url=database_url),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.cwd,
            env=self.environment(env),
        )

    def ok(self, *args: Any, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        """Like calling the runner, but fails the test unless the command exits 0."""
        result = self(*args, **kwargs)
        assert result.returncode == 0, (
            f"{' '.join(map(str, args))} exited {result.returncode}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
        return result

    def start(
        self,
        *args: Any,
        env: Mapping[str, str] | None = None,
        database_url: str | None | bool = True,
        **popen_kwargs: Any,
    ) -> subprocess.Popen[str]:
        """Start the command in the background (e.g. `serve`); the caller stops and waits on it."""
        popen_kwargs.setdefault("stdout", subprocess.PIPE)
        popen_kwargs.setdefault("stderr", subprocess.PIPE)
        return subprocess.Popen(
            self.command(*args, database_url=database_url),
            text=True,
            cwd=self.cwd,
            env=self.environment(env),
            **popen_kwargs,
        )


@pytest.fixture
def cli_runner(database_url: str, tmp_path: Path) -> CliRunner:
    """The real command line against this test's database, run from a temp directory."""
    return CliRunner(database_url=database_url, cwd=tmp_path)
