"""``ablate doctor``: is the results store sound, and is anything stuck?

A sweep that was killed leaves rows ``running`` under a coordinator that no longer
exists; the next ``ablate run`` of that spec requeues them, but runs of a spec nobody
reruns stay stuck. ``doctor`` shows them (with their owner and last heartbeat), checks
the file with SQLite's own integrity check, and ``--fix`` requeues the stale rows.
Exit code: 0 healthy, 1 problems found (after ``--fix``: problems left), 2 bad input.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Annotated

import typer

from ablate.cli._app import app
from ablate.cli.options import DB_DEFAULT, DbOpt
from ablate.errors import StoreError


def _file_version(path) -> int | None:
    """The schema version written in the file, read without upgrading it (None: unknown)."""
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=60)
        try:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if "meta" not in tables:
                return 1 if "runs" in tables else None
            row = con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            return int(row[0]) if row else 1
        finally:
            con.close()
    except (sqlite3.DatabaseError, ValueError):
        return None


@app.command("doctor")
def doctor_cmd(
    db: DbOpt = DB_DEFAULT,
    fix: Annotated[bool, typer.Option("--fix", help="Requeue stale running rows (their coordinator is gone).")] = False,
) -> int:
    """Check the store: integrity, schema version, stale running rows, incomplete results."""
    from ablate.store import SCHEMA_VERSION, Store, health, integrity, to_url
    from ablate.storefile import store_exists

    if not store_exists(db):
        raise StoreError(f"no results store at {db}")
    url = to_url(db)
    problems, before = 0, None
    if url.startswith("sqlite:///"):  # checked before Store() opens (and upgrades) the file
        path = Path(url.split("sqlite:///", 1)[1])
        before = _file_version(path)
        bad = integrity(path)
        if bad:
            typer.echo(f"integrity: FAILED ({len(bad)} problem(s)): " + "; ".join(bad[:5]))
            problems += 1
        else:
            typer.echo("integrity: ok")
    store = Store(db, create=False)
    h = health(store)
    upgraded = f" (upgraded from {before})" if before is not None and before != h.schema_version else ""
    typer.echo(f"schema: version {h.schema_version}{upgraded}, this ablate writes {SCHEMA_VERSION}")
    typer.echo(f"running: {len(h.running)} under a live coordinator, {len(h.stale)} stale")
    for r in h.stale:
        beat = r.heartbeat_at.isoformat(sep=" ", timespec="seconds") if r.heartbeat_at else "never"
        typer.echo(f"  stale run {r.id} {r.name}: owner {r.owner or '-'}, last heartbeat {beat} UTC")
    if h.stale:
        if fix:
            n = store.requeue([r.id for r in h.stale], retry=False)["stale"]
            typer.echo(f"  fixed: {n} stale run(s) requeued (pending); `ablate run SPEC` runs them")
        else:
            typer.echo("  run `ablate doctor --fix` (or the spec's `ablate run`) to requeue them")
            problems += 1
    if h.done_without_test:
        ids = ", ".join(str(i) for i in h.done_without_test[:20])
        typer.echo(f"done without test metrics: {len(h.done_without_test)} run(s): {ids}")
        problems += 1
    for table, n in h.orphans.items():
        what = "runs in no experiment" if table == "runs" else f"{table} rows pointing at nothing"
        typer.echo(f"orphans: {n} {what}")
        if table != "runs":  # a run left out of every spec is harmless; a dangling row is not
            problems += 1
    typer.echo("healthy" if not problems else f"{problems} problem(s) found")
    raise typer.Exit(1 if problems else 0)
