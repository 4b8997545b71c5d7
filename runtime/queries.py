"""Named SQL queries, loaded from `runtime/sql/queries/*.sql`.

Each query starts with a line `-- name: query_name`; the comment lines right after it are its
documentation and are dropped; the rest, up to the next `-- name:` line, is the statement.
Statements use psycopg `%(name)s` placeholders, so a literal `%` is written `%%` in a query that
takes parameters.

    from runtime.queries import Q, query
    conn.execute(Q.list_plugins)
    conn.execute(query("get_config"), {"id": 3})
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from sandbox.manifest import Cadence

QUERIES_DIR = Path(__file__).parent / "sql" / "queries"
_NAME_LINE = re.compile(r"^--\s*name:\s*(?P<name>\S+)\s*$")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class QueryError(LookupError):
    """A query file that cannot be parsed, or a query name that does not exist."""


def parse_queries(text: str, source: str = "<string>") -> dict[str, str]:
    """The named queries in one .sql file's text."""
    queries: dict[str, str] = {}
    name: str | None = None
    body: list[str] = []
    in_doc = False

    def flush() -> None:
        if name is None:
            return
        statement = "\n".join(body).strip()
        if not statement:
            raise QueryError(f"{source}: query '{name}' is empty")
        queries[name] = statement

    for lineno, line in enumerate(text.splitlines(), start=1):
        match = _NAME_LINE.match(line)
        if match:
            flush()
            name = match.group("name")
            if not _IDENT.match(name):
                raise QueryError(f"{source}, line {lineno}: '{name}' is not a valid query name")
            if name in queries:
                raise QueryError(f"{source}, line {lineno}: query '{name}' is defined twice")
            body, in_doc = [], True
            continue
        if name is None:
            if line.strip() and not line.lstrip().startswith("--"):
                raise QueryError(f"{source}, line {lineno}: SQL before the first '-- name:' line")
            continue
        if in_doc and line.lstrip().startswith("--"):
            continue
        in_doc = False
        body.append(line)
    flush()
    return queries


def load_queries(directory: Path = QUERIES_DIR) -> dict[str, str]:
    """Every named query of every .sql file in `directory`; a name may be defined only once."""
    queries: dict[str, str] = {}
    for path in sorted(directory.glob("*.sql")):
        for name, statement in parse_queries(path.read_text(encoding="utf-8"), path.name).items():
            if name in queries:
                raise QueryError(f"{path.name}: query '{name}' is also defined in another file")
            queries[name] = statement
    return queries


# A marker a statement may hold, filled in with the project's vocabulary: the cadences whose
# slots are computed in a time zone (sandbox/manifest.py `Cadence.zoned`).
ZONED_MARKER = "/*cadences:ZONED*/"


def _filled(statement: str) -> str:
    zoned = ", ".join(f"'{cadence.value}'" for cadence in Cadence if cadence.zoned)
    return statement.replace(ZONED_MARKER, zoned)


@cache
def all_queries() -> dict[str, str]:
    return {name: _filled(text) for name, text in load_queries().items()}


def query(name: str) -> str:
    """The SQL text of the query called `name`."""
    try:
        return all_queries()[name]
    except KeyError:
        raise QueryError(f"no query named '{name}' in {QUERIES_DIR}") from None


class _Queries:
    """`Q.name` is `query("name")`."""

    def __getattr__(self, name: str) -> str:
        if name.startswith("__"):
            raise AttributeError(name)
        return query(name)

    def __dir__(self) -> list[str]:
        return sorted(all_queries())


Q = _Queries()
