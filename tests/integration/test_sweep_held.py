"""The sweep's statement leaves out the runs the asking node holds (neither locked nor sent),
and only those: its other runs under its id, and every run of a dead node, come back."""

from __future__ import annotations

from typing import Any

import psycopg

from runtime.node.gateway import PgGateway, Registration


def _claimed(db: psycopg.Connection[Any], node: str, count: int) -> list[int]:
    rows = db.execute(
        "INSERT INTO plugin_runtime.runs (config_id, task, slot, state, node)"
        " SELECT 1, 't', now(), 'claimed', %(node)s FROM generate_series(1, %(n)s) RETURNING id",
        {"node": node, "n": count},
    ).fetchall()
    return sorted(int(r["id"]) for r in rows)


def test_the_orphan_statement_leaves_out_exactly_the_runs_the_node_holds(
    database_url: str, db: psycopg.Connection[Any]
) -> None:
    db.execute(
        "INSERT INTO plugin_runtime.nodes (id, hostname, pid, heartbeat_at)"
        " VALUES ('node-dead', 'h', 1, now() - interval '1 hour')"
    )
    mine = _claimed(db, "node-a", 3)
    theirs = _claimed(db, "node-dead", 2)
    gateway = PgGateway(database_url)
    try:
        gateway.open(Registration("node-a", "h", 2, ("scheduledTasks",), {}, 1))
        with gateway.transaction():
            everything = gateway.orphan_runs("node-a", 20.0)
        assert sorted(r.run_id for r in everything) == sorted(mine + theirs)
        # A held id of another node's run does not hide that run: only this node's own.
        with gateway.transaction():
            left = gateway.orphan_runs("node-a", 20.0, [mine[0], mine[2], theirs[0]])
        assert sorted(r.run_id for r in left) == sorted([mine[1], *theirs])
        assert {r.node for r in left if r.run_id == mine[1]} == {"node-a"}
        # What it leaves out it does not lock: another session can lock a held run at once.
        with gateway.transaction():
            gateway.orphan_runs("node-a", 20.0, [mine[0]])
            with psycopg.connect(database_url, autocommit=False) as other:
                locked = other.execute(
                    "SELECT id FROM plugin_runtime.runs WHERE id = ANY(%s) FOR UPDATE SKIP LOCKED",
                    ([mine[0], mine[1]],),
                ).fetchall()
                assert [row[0] for row in locked] == [mine[0]]
    finally:
        gateway.close()
