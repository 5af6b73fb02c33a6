"""``ablate cancel SPEC``: cancel a spec's Slurm jobs and mark their runs interrupted.

The runs are requeued by the next ``ablate run`` like any interrupted run; finished runs
and their results are untouched.
"""

from __future__ import annotations

from ablate.cli._app import app
from ablate.cli.options import DB_DEFAULT, DbOpt, OverrideOpt, SpecArg


@app.command("cancel")
def cancel_cmd(
    spec_path: SpecArg,
    db: DbOpt = DB_DEFAULT,
    override: OverrideOpt = None,
) -> int:
    """Cancel the spec's running Slurm jobs (scancel); their runs become interrupted."""
    from rich.console import Console

    from ablate import api
    from ablate.cli.options import parse_overrides

    name, n, jobs = api.cancel(spec_path, db=db, overrides=parse_overrides(override))
    Console().print(f"{name}: cancelled {len(jobs)} job(s), {n} run(s) marked interrupted"
                    + (f" [{', '.join(jobs[:8])}{' …' if len(jobs) > 8 else ''}]" if jobs else ""), highlight=False)
    return 0
