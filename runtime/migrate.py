"""Schema migrations: `runtime/sql/migrations/NNNN_name.sql`, applied in order.

Each migration runs in its own transaction and is recorded in
`plugin_runtime.schema_migrations` in that same transaction, which first takes a
transaction-scoped advisory lock (`pg_advisory_xact_lock`) and checks the migration is still
pending, so several processes starting at once apply each migration exactly once (the others
wait, then find nothing left to do). Nothing outlives the transaction, so migrating works the
same through PgBouncer in transaction pooling mode. When everything is applied already, `migrate` costs
one query and takes no lock.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import errors

from runtime.queries import Q

MIGRATIONS_DIR = Path(__file__).parent / "sql" / "migrations"
# A fixed key for pg_advisory_xact_lock: "plugin-runtime migrate" in ASCII, truncated to 63 bits.
LOCK_KEY = 0x706C7567696E7274
_FILE_RE = re.compile(r"^(?P<version>\d{4})_(?P<name>[A-Za-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    """A migration file that is misnamed or fails to apply; the message names the file."""


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    path: Path

    @property
    def label(self) -> str:
        return f"{self.version}_{self.name}"


def available_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migration files, in version order. Versions must be unique."""
    found: dict[str, Migration] = {}
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_RE.match(path.name)
        if not match:
            raise MigrationError(f"{path.name}: migration files are named NNNN_name.sql")
        version = match.group("version")
        if version in found:
            raise MigrationError(
                f"{path.name}: version {version} is also {found[version].path.name}"
            )
        found[version] = Migration(version, match.group("name"), path)
    return [found[v] for v in sorted(found)]


def applied_versions(conn: psycopg.Connection[Any]) -> set[str] | None:
    """The versions recorded as applied, or None when the bookkeeping table does not exist."""
    try:
        rows = conn.execute(Q.migrations_applied).fetchall()
    except (errors.UndefinedTable, errors.InvalidSchemaName):
        return None
    return {_first(row) for row in rows}


def _first(row: Any) -> Any:
    return next(iter(row.values())) if isinstance(row, dict) else row[0]


def pending_migrations(
    conn: psycopg.Connection[Any], directory: Path = MIGRATIONS_DIR
) -> list[Migration]:
    applied = applied_versions(conn) or set()
    return [m for m in available_migrations(directory) if m.version not in applied]


def migrate(conn: psycopg.Connection[Any], directory: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply the pending migrations; returns their labels (e.g. ["0001_initial"]), in order.

    `conn` must be in autocommit mode (each migration is a transaction of its own).
    """
    if not conn.autocommit:
        raise ValueError("migrate() needs an autocommit connection")
    migrations = available_migrations(directory)
    applied = applied_versions(conn)
    if applied is not None and all(m.version in applied for m in migrations):
        return []

    done: list[str] = []
    for migration in migrations:
        if _apply(conn, migration):
            done.append(migration.label)
    return done


def _apply(conn: psycopg.Connection[Any], migration: Migration) -> bool:
    """Apply `migration` unless another process did; True when this call applied it."""
    sql = migration.path.read_text(encoding="utf-8")
    try:
        with conn.transaction():
            # Transaction-scoped: released at COMMIT or ROLLBACK, so it holds behind a pooler in
            # transaction mode, where a session lock would stay on a pooled server connection.
            conn.execute(Q.migrations_lock, {"key": LOCK_KEY})
            conn.execute(Q.migrations_bootstrap)
            if migration.version in (applied_versions(conn) or set()):
                return False  # another process applied it while we waited for the lock
            search_path = _first(conn.execute(Q.migrations_get_search_path).fetchone())
            conn.execute(sql.encode())  # no parameters: sent as one simple query, many statements
            conn.execute(
                Q.migrations_record, {"version": migration.version, "name": migration.name}
            )
            # A migration may `SET search_path`, which would outlive the transaction on the
            # (possibly pooled) server connection: set it back before COMMIT.
            conn.execute(Q.migrations_set_search_path, {"search_path": search_path})
        return True
    except psycopg.OperationalError:
        raise
    except psycopg.Error as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MigrationError(f"migration {migration.path.name} failed: {detail}") from exc
