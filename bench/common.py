"""What every benchmark shares: the bare fork rate, throwaway `bench_*` databases, the server's
own statement count, percentiles, and the result line.

Statements are counted by PostgreSQL itself: a benchmark database gets
`ALTER DATABASE bench_x SET log_statement = 'all'`, so every statement of every session that
connects to it afterwards lands in the server log with the prefix `%m [%p] %q%u@%d`; the harness's
own sessions connect with `-c log_statement=none` and are never counted. `StatementLog` counts the
lines of that database between two marker statements.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from runtime.percentile import percentile as percentile  # re-exported for the benchmarks
from runtime.queries import load_queries
from runtime.testing.postgres import create_database, drop_database, url_with_database
from sandbox.steptiming import bare_fork_loop

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
PLUGINS_DIR = BENCH_DIR / "plugins"
IMG_DIR = REPO_ROOT / "docs" / "img"
SERVER_ENV = "PLUGIN_RUNTIME_BENCH_DATABASE_URL"
DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
SERVER_LOG_ENV = "PLUGIN_RUNTIME_BENCH_SERVER_LOG"
DEFAULT_SERVER_LOG = "/var/log/postgresql/postgresql-15-main.log"
QUIET = "-c log_statement=none"

_QUERIES = load_queries(BENCH_DIR / "sql")


class BenchError(RuntimeError):
    """A benchmark cannot run here; the message says why, in one line."""


def q(name: str) -> str:
    return _QUERIES[name]


def server_url() -> str:
    return os.environ.get(SERVER_ENV, DEFAULT_SERVER)


@dataclass
class Figure:
    """One recorded figure, with the 1-minute load average when it was taken and its conditions
    (for `make bench`'s table)."""

    name: str
    value: float | str
    load: float
    note: str = ""


FIGURES: list[Figure] = []  # every figure recorded in this process, in order


def record(name: str, value: float | str, note: str = "") -> None:
    """Print `<name>: <value>` and keep it for the summary table."""
    FIGURES.append(Figure(name, value, os.getloadavg()[0], note))
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    print(f"{name}: {text}", flush=True)


def result(name: str, value: float | str, note: str = "") -> None:
    """The last line of every benchmark: `<name>: <value>`."""
    record(name, value, note)


# -- the machine's limit ------------------------------------------------------------------------
def fork_rate(seconds: float) -> float:
    """Bare `os.fork()` + `os._exit(0)` in the child + `os.waitpid` in this process, one at a time:
    forks per second."""
    count, elapsed = bare_fork_loop(seconds)
    return count / elapsed


# -- databases ----------------------------------------------------------------------------------
def connect_quiet(url: str) -> psycopg.Connection[Any]:
    """A harness connection: autocommit, dict rows, and nothing it sends is logged or counted."""
    return psycopg.connect(url, autocommit=True, row_factory=dict_row, options=QUIET)


@dataclass
class BenchDatabase:
    """A throwaway database `bench_<label>_<hex>` on the benchmark server, migrated."""

    label: str
    server: str = field(default_factory=server_url)
    name: str = ""
    created: bool = False

    @property
    def url(self) -> str:
        return url_with_database(self.server, self.name)

    def create(self, log_statements: bool = True) -> BenchDatabase:
        from runtime.migrate import migrate

        try:
            self.name = create_database(
                self.server,
                prefix=f"bench_{self.label}",
                settings={"log_statement": "all"} if log_statements else None,
                options=QUIET,
            )
        except psycopg.OperationalError as exc:
            raise BenchError(
                f"cannot reach the benchmark PostgreSQL ({SERVER_ENV}): "
                f"{str(exc).strip().splitlines()[-1]}"
            ) from exc
        self.created = True
        with connect_quiet(self.url) as conn:
            migrate(conn)
        return self

    def drop(self) -> None:
        if self.created:
            drop_database(self.server, self.name, options=QUIET)

    def conn(self) -> psycopg.Connection[Any]:
        return connect_quiet(self.url)

    def scalar(self, name: str, params: dict[str, Any] | None = None) -> Any:
        with self.conn() as conn:
            row = conn.execute(q(name), params or {}).fetchone()
            return None if row is None else next(iter(row.values()))

    def rows(self, name: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        with self.conn() as conn:
            return list(conn.execute(q(name), params or {}).fetchall())

    def __enter__(self) -> BenchDatabase:
        return self if self.created else self.create()

    def __exit__(self, *exc: object) -> None:
        self.drop()


def install_minute_configs(db: BenchDatabase, plugin_dir: Path, count: int) -> int:
    """Install a plugin and `count` configs of it (one INSERT), with only their minute task."""
    from runtime import store
    from sandbox import load_plugin

    with db.conn() as conn:
        store.install_plugin(conn, load_plugin(plugin_dir))
        row = conn.execute(q("plugin_id"), {"name": load_plugin(plugin_dir).name}).fetchone()
        assert row is not None
        plugin_id = int(row["id"])
        conn.execute(q("create_configs"), {"plugin_id": plugin_id, "count": count})
        store.sync_tasks(conn)
        conn.execute(q("keep_minute_tasks_only"))
        conn.execute(q("analyze_tables"))
    return plugin_id


# -- the server's statement count ----------------------------------------------------------------
_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ \S+ \[\d+\] (?P<user>[^@\s]*)@(?P<db>\S+) "
    r"LOG:  (?:statement|execute [^:]*): (?P<sql>.*)$"
)
EXCLUDED = ("BEGIN", "COMMIT", "ROLLBACK")


@dataclass
class StatementCount:
    total: int  # every statement of the database between the markers, BEGIN/COMMIT aside
    excluded: Counter[str]  # BEGIN / COMMIT / ROLLBACK lines, not in total
    by_kind: Counter[str]  # first words of the counted statements

    def describe(self) -> str:
        kinds = ", ".join(f"{k} {n}" for k, n in self.by_kind.most_common(8))
        skipped = ", ".join(f"{k} {n}" for k, n in sorted(self.excluded.items())) or "none"
        return f"{self.total} statements ({kinds}); excluded: {skipped}"


class StatementLog:
    """Counts, from the server log, the statements sent to one database between two markers.

    log = StatementLog(db)
    log.mark_start(); ...workload...; log.mark_end(); count = log.count()
    """

    def __init__(self, db: BenchDatabase, path: str | None = None) -> None:
        self.db = db
        self.path = Path(path or os.environ.get(SERVER_LOG_ENV, DEFAULT_SERVER_LOG))
        if not os.access(self.path, os.R_OK):
            raise BenchError(
                f"cannot read the PostgreSQL server log {self.path} "
                f"(set {SERVER_LOG_ENV}); statements are counted from it"
            )
        self.token = secrets.token_hex(6)
        self._offset = 0

    def _marker(self, which: str) -> None:
        # A session that logs (the database default), so the marker is in the log itself.
        with psycopg.connect(self.db.url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("SELECT {}").format(sql.Literal(f"bench-marker-{which}-{self.token}"))
            )

    def mark_start(self) -> None:
        self._offset = self.path.stat().st_size
        self._marker("start")

    def mark_end(self) -> None:
        self._marker("end")
        time.sleep(0.3)  # the server's stderr reaches the file asynchronously

    def count(self) -> StatementCount:
        start_tag = f"bench-marker-start-{self.token}"
        end_tag = f"bench-marker-end-{self.token}"
        total = 0
        excluded: Counter[str] = Counter()
        kinds: Counter[str] = Counter()
        inside = False
        pending_kind = False  # a counted statement whose text starts on the next line
        with open(self.path, encoding="utf-8", errors="replace") as fh:
            fh.seek(self._offset)
            for line in fh:
                m = _LINE.match(line.rstrip("\n"))
                if m is None:
                    if pending_kind and line.strip():
                        kinds[line.split(None, 1)[0].upper()] += 1
                        pending_kind = False
                    continue
                if pending_kind:
                    kinds["?"] += 1
                    pending_kind = False
                if m.group("db") != self.db.name:
                    continue
                text = m.group("sql")
                if start_tag in text:
                    inside = True
                    continue
                if end_tag in text:
                    break
                if not inside:
                    continue
                word = (text.split(None, 1) or [""])[0].upper().rstrip(";")
                if word in EXCLUDED:
                    excluded[word] += 1
                    continue
                total += 1
                if word:
                    kinds[word] += 1
                else:
                    pending_kind = True
        if not inside:
            raise BenchError(f"the start marker is not in {self.path}: is log_statement honoured?")
        return StatementCount(total, excluded, kinds)


@contextmanager
def timed(label: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    print(f"  ({label}: {time.perf_counter() - start:.1f} s)", flush=True)


def machine() -> dict[str, str]:
    """Cores, memory, kernel: printed at the top of every run."""
    import platform

    import psutil

    return {
        "cores": str(os.cpu_count()),
        "memory": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
    }
