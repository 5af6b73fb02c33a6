"""``ablate status [SPEC|NAME]``: counts by status and what is running where."""

from __future__ import annotations

from datetime import datetime

import typer

from ablate.cli._app import app
from ablate.cli.options import DB_DEFAULT, DbOpt, OverrideOpt, parse_overrides
from ablate.cli.table import TargetsArg

# Columns of the "running" table; each is (header, function of a row dict -> text).
# An executor that knows more (a Slurm job id and state) adds a column here and a field
# in running_runs.
RUNNING_COLUMNS = [
    ("id", lambda r: str(r["id"])),
    ("name", lambda r: r["name"]),
    ("device", lambda r: r["device"] or ""),
    ("host", lambda r: r["host"] or ""),
    ("epoch", lambda r: "" if r["epoch"] is None else str(r["epoch"])),
    ("running for", lambda r: _age(r["started_at"])),
    ("heartbeat", lambda r: _age(r["heartbeat_at"]) + " ago" if r["heartbeat_at"] else ""),
]


def _age(t: datetime | None) -> str:
    if t is None:
        return ""
    from ablate.store import utcnow

    s = max(0, int((utcnow() - t).total_seconds()))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "none"


def _older_line(older: dict[int, tuple[str, str]]) -> str | None:
    """One line when some of the runs were trained by older code than this checkout's
    (:mod:`ablate.versions`): their stored numbers are not what the code computes now."""
    if not older:
        return None
    then = sorted({pair[0] for pair in older.values()})
    now = sorted({pair[1] for pair in older.values()})
    return (f"  {len(older)} run(s) trained by older code ({', '.join(then)}; now {', '.join(now)}): "
            "`ablate run` of their spec trains them again")


@app.command("status")
def status_cmd(
    targets: TargetsArg = None,
    db: DbOpt = DB_DEFAULT,
    override: OverrideOpt = None,
) -> None:
    """Counts by status (per experiment, or the whole store) and the runs running now."""
    from rich.console import Console

    from ablate import api

    state = api.status(targets, db=db, overrides=parse_overrides(override))
    con = Console()
    for exp in state.experiments:
        total = len(exp.run_ids) if targets else sum(exp.counts.values())
        typer.echo(f"{exp.name}: {total} runs, " + _counts(exp.counts))
        older = _older_line(exp.older)
        if older:
            typer.echo(older)
    running, states = state.running, state.job_states
    columns = RUNNING_COLUMNS
    if any(r["job_id"] for r in running):  # Slurm runs: the job id and the job's live state
        columns = columns + [("job", lambda r: r["job_id"] or ""), ("state", lambda r: states.get(r["id"], ""))]
    if running:
        from ablate.report.table import print_whole, terminal_width

        width = terminal_width(con)
        tables, lines = running_view(running, columns, con, width)
        print_whole(con, tables, lines, width)


# Columns left out, in this order, when the running table is wider than the terminal.
OPTIONAL_COLUMNS = ("host", "heartbeat", "running for")


def running_view(running: list[dict], columns: list, console, width: int | None) -> tuple[list, list]:
    """The running runs as (tables, text lines) that fit ``width`` columns (None: a pipe,
    any width). Cells never wrap and are never cut: a narrower layout leaves out the
    optional columns (a line says which), and if even that is too wide each run becomes
    a block of lines, ``#id name`` then its fields."""
    from rich.table import Table
    from rich.text import Text

    from ablate.report.table import fits

    def table(cols):
        t = Table(title="running")
        for head, _ in cols:
            t.add_column(head, no_wrap=True, overflow="fold")
        for r in running:
            t.add_row(*(Text(fn(r)) for _, fn in cols))  # Text: a name is not rich markup
        return t

    if width is None:
        return [table(columns)], []
    cols, left_out = columns, []
    for name in (None, *OPTIONAL_COLUMNS):
        if name is not None and any(h == name for h, _ in cols):
            cols = [c for c in cols if c[0] != name]
            left_out.append(name)
        t = table(cols)
        if fits(console, t, width):
            note = [Text(f"({', '.join(left_out)} left out to fit {width} columns)", style="dim")] if left_out else []
            return [t], note
    from rich.cells import cell_len

    lines = [Text("running:", style="bold")]
    for r in running:
        lines.append(Text(f"#{r['id']} {r['name']}"))
        line = ""
        for field in (f"{h}: {fn(r)}" for h, fn in columns if h not in ("id", "name") and fn(r)):
            if line and cell_len(f"{line}   {field}") > width:  # break between fields, never inside one
                lines.append(Text(line))
                line = ""
            line = f"{line}   {field}" if line else f"    {field}"
        if line:
            lines.append(Text(line))
    return [], lines
