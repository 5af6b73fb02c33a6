"""``ablate show ID``: one run in full — what differs from its baseline, metrics, epochs, log tail."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer

from ablate.cli._app import app
from ablate.cli.options import DB_DEFAULT, DbOpt
from ablate.cli.table import open_store
from ablate.errors import UsageError


def baseline_of(store, run) -> tuple[object | None, str]:
    """The run to diff against: the first baseline of an experiment holding ``run`` (same
    seed when there is one), else the original of a rerun. Returns (run, why)."""
    from sqlalchemy import select

    from ablate.store import Member, Run

    from ablate.report.frame import read_connection

    with read_connection(store) as s:
        exp_ids = list(s.scalars(select(Member.experiment_id).where(Member.run_id == run.id)))
        if exp_ids:
            rows = s.execute(
                select(Member.row, Run.id, Run.seed).join(Run, Run.id == Member.run_id)
                .where(Member.experiment_id.in_(exp_ids), Member.role == "baseline").order_by(Member.position)
            ).all()
            if rows:
                first = rows[0].row
                same = [r for r in rows if r.row == first]
                pick = next((r for r in same if r.seed == run.seed), same[0])
                if pick.id != run.id:
                    return store.get_run(pick.id), f"baseline {first} (run {pick.id}, seed {pick.seed})"
    if run.rerun_of is not None:
        return store.get_run(run.rerun_of), f"original run {run.rerun_of}"
    return None, ""


def config_diff(a: dict, b: dict) -> list[tuple[str, object, object]]:
    """Keys whose values differ, run-local settings left out (they never change results)."""
    from ablate.plan import LOCAL_KEYS

    missing = object()
    out = []
    for k in sorted((a.keys() | b.keys()) - LOCAL_KEYS):
        va, vb = a.get(k, missing), b.get(k, missing)
        if va != vb:
            out.append((k, "-" if va is missing else va, "-" if vb is missing else vb))
    return out


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def tail(path: str | None, n: int) -> list[str] | None:
    """Last ``n`` lines of a log, colour codes (RecBole's colorlog) stripped."""
    if not path or not Path(path).is_file():
        return None
    with open(path, encoding="utf-8", errors="replace") as fh:
        lines = fh.read().splitlines()
    return [_ANSI.sub("", line) for line in (lines[-n:] if n > 0 else [])]


def get_run_or_fail(store, run_id: int):
    run = store.get_run(run_id)
    if run is None:
        raise UsageError(f"no run with id {run_id} in {store.db}")
    return run


@app.command("show")
def show_cmd(
    run_id: Annotated[int, typer.Argument(help="Run id (see `ablate status`).", show_default=False)],
    db: DbOpt = DB_DEFAULT,
    lines: Annotated[int, typer.Option("--lines", "-n", help="Log lines to show.")] = 15,
) -> None:
    """Show one run: config diff vs its baseline, metrics, per-epoch losses, log tail."""
    from rich.console import Console
    from rich.table import Table

    store = open_store(db)
    run = get_run_or_fail(store, run_id)
    con = Console()
    con.print(f"[bold]run {run.id}[/bold] {run.name}  model {run.model}  dataset {run.dataset}  seed {run.seed}  key {run.key}")
    extra = [f"status {run.status}", f"attempts {run.attempts}"]
    if run.device:
        extra.append(f"device {run.device}")
    if run.wall_seconds is not None:
        extra.append(f"{run.wall_seconds:.1f} s")
    if run.best_epoch is not None:
        extra.append(f"best epoch {run.best_epoch}")
    if run.rerun_of is not None:
        extra.append(f"rerun of {run.rerun_of}")
    if run.git_commit:
        extra.append(f"git {run.git_commit[:12]}")
    con.print("  ".join(extra), highlight=False)
    if run.error:
        con.print(f"[red]error:[/red] {run.error}", highlight=False)

    base, why = baseline_of(store, run)
    if base is not None:
        diff = config_diff(run.config, base.config)
        t = Table()
        for c in ("key", "this run", "baseline"):
            t.add_column(c)
        for k, va, vb in diff:
            t.add_row(k, str(va), str(vb))
        con.print(f"config vs {why}:" if diff else f"config: identical to {why}", highlight=False)
        if diff:
            con.print(t)

    if run.metrics:
        vals = {}
        for m in run.metrics:
            vals.setdefault(m.name, {})[m.split] = m.value
        t = Table(title="metrics")
        for c in ("metric", "valid", "test"):
            t.add_column(c, justify="right" if c != "metric" else "left")
        for name in sorted(vals, key=lambda x: (x.split("@")[0], int(x.split("@")[1]) if "@" in x and x.split("@")[1].isdigit() else 0)):
            v = vals[name]
            t.add_row(name, *(f"{v[s]:.4f}" if s in v else "" for s in ("valid", "test")))
        con.print(t)

    if run.epochs:
        terms: list[str] = []
        for e in run.epochs:
            terms += [k for k in (e.losses or {}) if k not in terms]
        t = Table(title="epochs")
        for c in ("epoch", *terms, "valid score", "train s"):
            t.add_column(c, justify="right")
        for e in run.epochs:
            losses = e.losses or {}
            t.add_row(str(e.epoch), *(f"{losses[k]:.6g}" if k in losses else "" for k in terms),
                      "" if e.valid_score is None else f"{e.valid_score:.4f}",
                      "" if e.train_seconds is None else f"{e.train_seconds:.1f}")
        con.print(t)

    log = tail(run.log_path, lines)
    if log is not None:
        con.print(f"[bold]log[/bold] {run.log_path} (last {len(log)} lines)")
        for line in log:
            con.print(line, markup=False, highlight=False)
