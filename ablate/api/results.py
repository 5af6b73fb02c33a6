"""Reading results back: tables, runs, curves, one run in full, a sweep's state.

Tables come back two ways: :func:`comparison` gives the report's
:class:`~ablate.report.table.Table` (every mark decided, ready for the Markdown, LaTeX,
CSV, rich and HTML renderers), :func:`table` the same as a ``pandas.DataFrame`` with the
marks as columns. ``targets`` are spec files or stored experiment names (default: the
most recently updated experiment).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ablate.api.options import DEFAULT_DB
from ablate.errors import OptionError, UsageError


def _targets(targets) -> list[str] | None:
    if targets is None:
        return None
    if isinstance(targets, (str, Path)):
        return [str(targets)]
    return [str(t) for t in targets]


def comparison(targets=None, *, db: str = DEFAULT_DB, overrides: dict | None = None, metrics: list[str] | None = None,
               split: str = "test", baseline: str | None = None, precision: int = 4, sort: str | None = None,
               delta: bool = False, reference: Path | None = None, negligible: float = 0.01, test: str = "auto",
               correction: str = "holm", alpha: float = 0.05, ties: bool = False, ci: bool = False,
               n_resamples: int = 10_000, vs_reference: bool = False):
    """The comparison table with its marks (:func:`ablate.report.table.from_store`).

    ``test``: ``auto`` (the paired t-test over users where the runs kept per-user values,
    over seeds otherwise), ``user-t``, ``wilcoxon``, ``randomization`` or ``seeds``;
    ``correction`` (``holm``, ``bonferroni``, ``none``) over every row x column tested;
    ``ties``: mark rows not significantly different from the column's best; ``ci``: a
    paired bootstrap interval of each row's Δ vs the baseline (see :mod:`ablate.report.judge`)."""
    from ablate.report import table as table_mod

    return table_mod.from_store(db, _targets(targets), overrides=overrides, metrics=metrics, split=split,
                                baseline=baseline, precision=precision, sort=sort, delta=delta, reference=reference,
                                negligible=negligible, test=test, correction=correction, alpha=alpha, ties=ties, ci=ci,
                                n_resamples=n_resamples, vs_reference=vs_reference)


def table(targets=None, *, db: str = DEFAULT_DB, **options):
    """The comparison table as a DataFrame, one line per row (``model``): each metric's
    mean, ``_std``, ``_p`` (the test's), ``_p_adj`` (after the correction), ``_delta``,
    ``_ci_low``/``_ci_high`` (with ``ci``), ``_tie`` (with ``ties``) and the marks
    ``_rank`` (best, second) and ``_sig``; ``kind``, ``n`` (seeds), ``status`` and
    ``note``. Options as for :func:`comparison`."""
    from ablate.report import table as table_mod

    return table_mod.to_frame(comparison(targets, db=db, **options), marks=True).set_index("model")


def runs(targets=None, *, db: str = DEFAULT_DB, overrides: dict | None = None):
    """Every run of the experiments as a DataFrame: id, row, variant, role, seed, status,
    model, key, device, seconds, epochs, then each test metric, and ``valid_<metric>``."""
    import pandas as pd

    from ablate.report import frame as frame_mod
    from ablate.store import open_existing

    store = open_existing(db)
    names = frame_mod.resolve_targets(store, _targets(targets), overrides)
    frame = frame_mod.load(store, names, "test")
    stored = {r.id: r for r in store.runs(frame.run_ids())}
    records = []
    for rec in frame.runs.drop_duplicates("run_id").to_dict("records"):
        run = stored[int(rec["run_id"])]
        row = {"run_id": run.id, "experiment": rec["experiment"], "row": rec["row"], "variant": rec["variant"],
               "role": rec["role"], "seed": run.seed, "status": run.status, "model": run.model, "key": run.key,
               "device": run.device, "seconds": run.wall_seconds,
               "epochs": None if run.epoch is None else run.epoch + 1, "best_epoch": run.best_epoch}
        for m in run.metrics:
            row[m.name if m.split == "test" else f"{m.split}_{m.name}"] = m.value
        records.append(row)
    return pd.DataFrame(records).set_index("run_id") if records else pd.DataFrame()


def curves(run_ids, *, db: str = DEFAULT_DB):
    """Per-epoch loss terms and valid score of runs: run_id, epoch, valid_score, then
    one column per loss term (the first is the main loss)."""
    from ablate.report import frame as frame_mod
    from ablate.store import open_existing

    ids = [int(run_ids)] if isinstance(run_ids, int) else [int(i) for i in run_ids]
    store = open_existing(db)
    _runs_or_fail(store, ids)
    return frame_mod.epoch_losses(store, ids)


def _runs_or_fail(store, ids: list[int]) -> dict[int, Any]:
    found = {r.id: r for r in store.runs(ids, with_children=False)}
    missing = [i for i in ids if i not in found]
    if missing:
        raise UsageError(f"no run with id {missing[0]} in {store.db}")
    return found


@dataclass
class RunInfo:
    """One run in full: the stored run (metrics and epochs loaded), the run it is read
    against and why, their config difference, and the end of its log."""

    run: Any
    baseline: Any | None
    why: str
    diff: list[tuple[str, Any, Any]]
    log: list[str] | None
    per_user: Any | None = None  # ablate.peruser.PerUser of the test split, when the run kept them


def _run(store, run_id: int):
    """The stored run ``run_id`` (metrics and epochs loaded); a one-line error without it."""
    run = store.get_run(run_id)
    if run is None:
        raise UsageError(f"no run with id {run_id} in {store.db}")
    return run


def run_info(run_id: int, *, db: str = DEFAULT_DB, lines: int = 15) -> RunInfo:
    from ablate.report.runinfo import baseline_of, config_diff, tail
    from ablate.store import open_existing

    store = open_existing(db)
    run = _run(store, run_id)
    base, why = baseline_of(store, run)
    diff = config_diff(run.config, base.config) if base is not None else []
    data = store.per_user([run.id], "test").get(run.id)
    if data is not None:
        from ablate.peruser import decode

        data = decode(data)
    return RunInfo(run, base, why, diff, tail(run.log_path, lines), data)


def log(run_id: int, *, db: str = DEFAULT_DB, lines: int = 50) -> list[str]:
    """The last ``lines`` lines of a run's log (0: all of it)."""
    from ablate.report.runinfo import tail
    from ablate.store import open_existing

    run = _run(open_existing(db), run_id)
    if not run.log_path:
        raise UsageError(f"run {run_id} has no log yet (status {run.status})")
    out = tail(run.log_path, lines if lines > 0 else 10**9)
    if out is None:
        raise UsageError(f"run {run_id}: log file {run.log_path} is gone")
    return out


# ---------------------------------------------------------------------------- a sweep's state


@dataclass
class ExperimentStatus:
    name: str
    run_ids: list[int]
    counts: dict[str, int]
    older: dict[int, tuple[str, str]]  # run id -> (trained by, current implementation)


@dataclass
class Status:
    """Counts by status (per experiment, or the whole store) and the runs running now,
    with their Slurm job states where they run on Slurm."""

    experiments: list[ExperimentStatus]
    running: list[dict]
    job_states: dict[int, str] = field(default_factory=dict)


def status(targets=None, *, db: str = DEFAULT_DB, overrides: dict | None = None) -> Status:
    from ablate.report.frame import older_implementations, resolve_targets
    from ablate.store import open_existing

    store = open_existing(db)
    out: list[ExperimentStatus] = []
    ids: list[int] | None
    if targets:
        ids = []
        for name in resolve_targets(store, _targets(targets), overrides):
            exp_ids = store.experiment_run_ids(store.experiment(name).id)
            ids.extend(exp_ids)
            out.append(ExperimentStatus(name, exp_ids, store.counts(exp_ids), older_implementations(store, exp_ids)))
    else:
        ids = None
        out.append(ExperimentStatus(str(store.db), [], store.counts(), older_implementations(store, None)))
    running = store.running_rows(ids)
    states = {}
    if any(r["job_id"] for r in running):
        from ablate.executors.slurm import running_job_states

        states = running_job_states(store, running)
    return Status(out, running, states)


def _spec_runs(spec, db: str, overrides: dict | None):
    from ablate import plan, spec as spec_mod
    from ablate.store import open_existing

    spec_obj = spec_mod.load_spec(Path(spec))
    name = plan.experiment_name(spec_obj, overrides or {})
    store = open_existing(db)
    exp = store.experiment(name)
    if exp is None:
        raise UsageError(f"experiment {name!r} is not in {db} (run `ablate run {spec}` first)")
    return store, name, store.experiment_run_ids(exp.id)


@dataclass
class Collected:
    experiment: str
    summary: Any  # ablate.executors.slurm.CollectSummary
    counts: dict[str, int]


def collect(spec, *, db: str = DEFAULT_DB, overrides: dict | None = None, wait: bool = False, every: float = 30.0,
            force: bool = False) -> Collected:
    """Write what a spec's Slurm jobs left on shared storage into the store (idempotent);
    ``wait``: until none of its jobs runs; ``force``: also runs a live coordinator watches."""
    import time

    from ablate.executors.slurm import collect_runs

    if every <= 0:
        raise OptionError("every", "must be positive")
    store, name, run_ids = _spec_runs(spec, db, overrides)
    while True:
        summary = collect_runs(store, run_ids, include_live=force)
        if not wait or not summary.running:
            break
        time.sleep(every)
    return Collected(name, summary, store.counts(run_ids))


def cancel(spec, *, db: str = DEFAULT_DB, overrides: dict | None = None) -> tuple[str, int, list[str]]:
    """Cancel a spec's running Slurm jobs; their runs become ``interrupted``. Returns
    (experiment, runs marked, job ids)."""
    from ablate.executors.slurm import cancel_runs, collect_runs

    store, name, run_ids = _spec_runs(spec, db, overrides)
    collect_runs(store, run_ids, include_live=True)  # keep what already finished
    n, jobs = cancel_runs(store, run_ids)
    return name, n, jobs


# ---------------------------------------------------------------------------- searches, plots, the report


def trials(target, *, db: str = DEFAULT_DB, overrides: dict | None = None):
    """A search's trials (spec file or stored search name): (name, metric, direction, trials)."""
    return _search_trials(target, db, overrides)[1:]


def _search_trials(target, db: str, overrides: dict | None):
    """(search block, name, metric, direction, trials) of a search with trials."""
    from ablate import search as search_mod
    from ablate.store import open_existing

    store = open_existing(db)
    block, name, metric, direction = search_mod.open_search(store, str(target), overrides)
    found = search_mod.stored_trials(store, name, metric)
    if not found:
        raise UsageError(f"search {name!r} has no trials yet")
    return block, name, metric, direction, found


def top(target, k: int, *, db: str = DEFAULT_DB, overrides: dict | None = None, fmt: str = "plain") -> str:
    """The ``k`` best trials of a search as text (``plain``, ``md`` or ``csv``)."""
    from ablate import search as search_mod
    from ablate.report.search_table import render_top

    name, metric, direction, found = trials(target, db=db, overrides=overrides)
    return render_top(found, search_mod.best(found, direction)[:k], name, metric, fmt)


def search_plot(target, out: Path, *, db: str = DEFAULT_DB, overrides: dict | None = None) -> Path:
    """A search's optimisation history and each parameter's effect, as a PNG."""
    from ablate.report.search_plot import plot_search

    block, name, metric, direction, found = _search_trials(target, db, overrides)
    return plot_search(found, block.space, metric, direction, out, title=name)


def sweep_plot(targets, x: str, out: Path, *, db: str = DEFAULT_DB, y: str = "recall@20", hue: str = "variant",
               split: str = "test", overrides: dict | None = None, logx: bool | None = None,
               baseline: str | None = None) -> Path:
    """``y`` along the swept parameter ``x`` (mean ± std over seeds, one line per ``hue``,
    the baseline as a reference band), as a PNG."""
    from ablate.report import frame as frame_mod, plot as plot_mod
    from ablate.store import open_existing

    store = open_existing(db)
    names = frame_mod.resolve_targets(store, _targets(targets), overrides)
    data = frame_mod.load(store, names, split, with_config=True)
    base = plot_mod.baseline_row(data, baseline)
    points = plot_mod.sweep_points(data, x, y, hue, exclude=(base,) if base else ())
    return plot_mod.plot_sweep(points, x, y.lower(), out, title=", ".join(names), logx=logx,
                               baseline=plot_mod.baseline_band(data, y, base))


def curves_plot(run_ids, out: Path, *, db: str = DEFAULT_DB) -> Path:
    """Per-epoch loss terms and valid score of runs (one colour per row, in every panel)."""
    from ablate.report import frame as frame_mod, plot as plot_mod
    from ablate.store import open_existing

    ids = [int(i) for i in run_ids]
    if not ids:
        raise OptionError("curves", "expects run ids")
    store = open_existing(db)
    found = _runs_or_fail(store, ids)
    labels = {i: f"{found[i].name} (#{i}, seed {found[i].seed})" for i in ids}
    groups = {i: found[i].name for i in ids}  # a row's seeds share a colour and marker
    return plot_mod.plot_curves(frame_mod.epoch_losses(store, ids), labels, out, groups)


def report(targets=None, out: Path = Path("report.html"), *, db: str = DEFAULT_DB, overrides: dict | None = None,
           metrics: list[str] | None = None, split: str = "test", baseline: str | None = None, precision: int = 4,
           reference: Path | None = None, negligible: float = 0.01, y: str | None = None, test: str = "auto",
           correction: str = "holm", alpha: float = 0.05, ties: bool = False, ci: bool = True) -> Path:
    """Write one self-contained HTML page: the table with its marks, a plot per grid axis,
    every run's curves and config diff, failures and the code the runs came from."""
    from ablate.report import html

    context = html.build(db, _targets(targets), overrides=overrides, metrics=metrics, split=split, baseline=baseline,
                         precision=precision, reference=reference, negligible=negligible, y=y, test=test,
                         correction=correction, alpha=alpha, ties=ties, ci=ci)
    return html.write(context, out)
