"""``ablate show ID``: one run in full — what differs from its baseline, metrics, epochs, log tail."""

from __future__ import annotations

from typing import Annotated

import typer

from ablate.cli._app import app
from ablate.cli.options import DB_DEFAULT, DbOpt


def distribution(per_user, per_line: int = 3) -> list[str]:
    """A run's test metrics user by user in a line or two: mean, median, 90th percentile,
    and the share of users at zero (what a mean hides)."""
    import numpy as np

    parts = []
    for name in per_user.columns:
        v = per_user.column(name).astype(np.float64)
        parts.append(f"{name} mean {v.mean():.4f} median {np.median(v):.4f} p90 {np.quantile(v, 0.9):.4f} "
                     f"zero {np.mean(v == 0):.0%}")
    head = f"per user (test, {len(per_user):,} users): "
    lines = ["; ".join(parts[i:i + per_line]) for i in range(0, len(parts), per_line)][:2]
    if len(parts) > 2 * per_line:
        lines[-1] += f"; {len(parts) - 2 * per_line} more columns"
    return [head + lines[0], *("  " + line for line in lines[1:])] if lines else []


@app.command("show")
def show_cmd(
    run_id: Annotated[int, typer.Argument(help="Run id (see `ablate status`).", show_default=False)],
    db: DbOpt = DB_DEFAULT,
    lines: Annotated[int, typer.Option("--lines", "-n", help="Log lines to show.")] = 15,
) -> None:
    """Show one run: config diff vs its baseline, metrics, per-epoch losses, log tail."""
    from rich.console import Console
    from rich.table import Table

    from ablate import api

    info = api.run_info(run_id, db=db, lines=lines)
    run = info.run
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

    diff, why = info.diff, info.why
    if info.baseline is not None:
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

    if info.per_user is not None:
        for line in distribution(info.per_user):
            con.print(line, highlight=False)

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

    log = info.log
    if log is not None:
        con.print(f"[bold]log[/bold] {run.log_path} (last {len(log)} lines)")
        for line in log:
            con.print(line, markup=False, highlight=False)
