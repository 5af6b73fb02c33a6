"""ablate from Python: everything the command line does, as functions that return data.

A notebook session::

    import ablate.api as ab

    result = ab.run("experiments/quickstart.yaml", on=ab.Local(jobs=2), fuse="auto")
    result.exit_code                      # 0: every run done
    df = ab.table("quickstart", baseline="LightGCN")
    df.loc["1e-7ot", ["recall@20", "recall@20_rank", "recall@20_p"]]
    ab.runs("quickstart")                 # one line per run, metrics as columns
    ab.curves([3, 4])                     # per-epoch loss terms and valid score
    ab.search("experiments/search.yaml", trials=8).best

Where runs execute is an option object checked when it is made (:class:`Local`,
:class:`Slurm`). Errors are :class:`ablate.errors.AblateError` with one-line messages
that name the API's options; the CLI is a thin layer over these functions.
"""

from __future__ import annotations

from ablate.api.options import Local, Slurm, Where
from ablate.api.results import (
    cancel, collect, comparison, curves, curves_plot, log, report, run_info, runs, search_plot, status, sweep_plot,
    table, top, trials,
)
from ablate.api.sweeps import (
    DEFAULT_DB, Plan, RerunResult, SearchResult, SweepResult, plan, rerun, rerun_failed, run, search, search_best,
    search_plan,
)

__all__ = [
    "DEFAULT_DB", "Local", "Plan", "RerunResult", "SearchResult", "Slurm", "SweepResult", "Where", "cancel", "collect",
    "comparison", "curves", "curves_plot", "log", "plan", "report", "rerun", "rerun_failed", "run", "run_info", "runs",
    "search", "search_best", "search_plan", "search_plot", "status", "sweep_plot", "table", "top", "trials",
]
