"""``ablate search``: tune one row of a spec with Optuna, every trial an ordinary stored run.

The spec's ``search:`` block (:class:`ablate.spec.SearchSpec`) names the row, the space, the
objective (a valid metric and its direction), the number of trials, the sampler and the
pruner. Optuna only proposes; ablate's store stays the single source of truth:

* a trial is the row's run with the proposed values as its grid point, planned by
  :func:`ablate.plan.expand` like any other run, so its key is the ordinary one: a
  config already stored ``done`` (by ``ablate run``, or an earlier search) answers the
  trial from the store instead of training again;
* the trials are the members of the experiment ``<spec name>.search``, in the order they
  were asked; on start the study is rebuilt from them (params, value, per-epoch valid
  scores) with ``study.add_trial``, and trials that never finished (a coordinator killed
  with ``kill -9``, Ctrl-C) are asked again with their own values. So a search resumes
  where it stopped and no finished trial trains twice;
* pruning rides on the per-epoch valid events the workers already send: the coordinator
  answers each with "go on" or "stop now" (:meth:`StudyPlanner.on_valid`), and a stopped
  run ends ``pruned`` with its epochs kept.

The trial budget counts distinct configurations: a proposal that repeats a trial of this
search is told its stored (or coming) result and asked again, without counting.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from ablate import catalog, plan, rules
from ablate.errors import SpecError, UsageError
from ablate.spec import ExperimentSpec, SearchSpec, line_in

SUFFIX = ".search"
BEST_SUFFIX = ".best"
# Proposals in a row that only repeat earlier trials before the search stops: a small
# choice/int space can hold fewer configurations than the trials asked for.
MAX_REPEATS = 200
# Statuses of a trial that never reached its end: asked again with its own values on resume.
UNFINISHED = ("pending", "running", "interrupted", "stalled")


@dataclass
class Search:
    """A validated search: the spec, the tuned row and Optuna's view of its space."""

    spec: ExperimentSpec
    overrides: dict
    block: SearchSpec
    row: str
    model: str
    metric: str
    direction: str
    name: str  # the store's experiment of the trials

    def distributions(self) -> dict:
        return {p: _distribution(d) for p, d in self.block.space.items()}

    def run_for(self, params: dict[str, Any], position: int = 0, seed: int | None = None) -> plan.RunSpec:
        """The run of one trial: the row with ``params`` as its grid point (its name says
        them), planned like every run of the spec."""
        rows = "variants" if self.row in self.spec.variants else "baselines"
        table = dict(getattr(self.spec, rows))
        table[self.row] = table[self.row].model_copy(update={
            "grid": {k: [v] for k, v in params.items()}, "zip": [], "run_name": None})
        derived = self.spec.model_copy(update={rows: table, "run_name": None, "grid": {}, "zip": [],
                                               "seeds": [self.spec.seeds[0] if seed is None else seed]})
        run = next(r for r in plan.expand(derived, self.overrides) if r.variant == self.row)
        return plan.RunSpec(key=run.key, name=run.name, variant=run.variant, role=run.role, model=run.model,
                            seed=run.seed, config=run.config, point=dict(params), position=position)


def experiment_name(spec: ExperimentSpec, overrides: dict | None) -> str:
    return plan.experiment_name(spec, overrides) + SUFFIX


def prepare(spec: ExperimentSpec, overrides: dict | None = None) -> Search:
    """Check a spec's search block against the row it tunes, before anything is stored:
    the row exists, every parameter is one the model knows, every end of every range and
    every choice passes the value rules, and the objective is a metric the runs compute.
    Raises SpecError naming the line of the mistake."""
    where = spec.path
    block = spec.search
    if block is None:
        raise SpecError(where, "the spec has no search: block (see `ablate search --help`)")
    rows = spec.rows()
    row = block.variant or next(iter(spec.variants), None) or next(iter(rows), None)
    if row is None or row not in rows:
        hint = f" (rows: {', '.join(rows)})" if rows else ""
        raise SpecError(where, f"search.variant: no row named {row!r}{hint}", line_in(spec, ("search", "variant")))
    search = Search(spec, dict(overrides or {}), block, row, "", "", block.objective.direction,
                    experiment_name(spec, overrides))
    own = plan.expand(spec, overrides)  # the spec's own runs are valid (errors at their lines)
    for name, dim in block.space.items():
        at = line_in(spec, ("search", "space", name))
        if dim.kind == "choice" and not all(v is None or isinstance(v, (bool, int, float, str)) for v in dim.values):
            raise SpecError(where, f"search.space.{name}: choices must be numbers, strings or booleans", at)
    first = next(r for r in own if r.variant == row)
    search.model = first.model
    known = catalog.known_params(first.model) if spec.check_params else None
    for name, dim in block.space.items():
        at = line_in(spec, ("search", "space", name))
        if name in plan.OWNED:
            raise SpecError(where, f"search.space.{name}: {plan.owned(name)}", at)
        if known is not None and name not in known:
            import difflib

            hint = difflib.get_close_matches(name, known, n=1)
            extra = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise SpecError(where, f"search.space.{name}: unknown parameter {name!r} for model {first.model}{extra}", at)
        for value in dim.values:
            found = rules.problem(first.model, {**first.config, name: value})
            if found is not None:
                raise SpecError(where, f"search.space.{name}: {found.message}", at)
    first = search.run_for({k: d.values[0] for k, d in block.space.items()})
    effective = {**catalog.recbole_defaults(), **first.config}
    computed = rules._valid_metric_names(effective)
    metric = (block.objective.metric or str(effective.get("valid_metric") or "MRR@10")).lower()
    if metric not in computed:
        raise SpecError(where, f"search.objective.metric: {metric} is not among what the runs compute ({', '.join(computed)})",
                        line_in(spec, ("search", "objective", "metric")) or line_in(spec, ("search", "objective")))
    search.metric = metric
    return search


def _show(value: Any) -> str:
    return plan.compact(value) if isinstance(value, float) else repr(value)


def _distribution(dim):
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if dim.kind == "loguniform":
        return FloatDistribution(dim.loguniform[0], dim.loguniform[1], log=True)
    if dim.kind == "uniform":
        return FloatDistribution(dim.uniform[0], dim.uniform[1], step=dim.step)
    if dim.kind == "int":
        return IntDistribution(dim.int_[0], dim.int_[1], step=int(dim.step or 1))
    return CategoricalDistribution(dim.choice)


def make_study(block: SearchSpec, sampler: str | None = None, pruner: str | None = None):
    """An in-memory Optuna study for the block (``sampler``/``pruner`` override its kinds:
    bench/search.py compares them on one spec)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    s, p = block.sampler, block.pruner
    if (sampler or s.kind) == "random":
        the_sampler = optuna.samplers.RandomSampler(seed=s.seed)
    else:  # constant_liar: trials asked while others run are kept apart from them
        the_sampler = optuna.samplers.TPESampler(seed=s.seed, n_startup_trials=s.startup_trials, constant_liar=True)
    kind = pruner or p.kind
    if kind == "median":
        the_pruner = optuna.pruners.MedianPruner(n_startup_trials=p.startup_trials, n_warmup_steps=p.warmup_epochs)
    elif kind == "halving":
        the_pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=p.warmup_epochs + 1, reduction_factor=p.reduction_factor)
    else:
        the_pruner = optuna.pruners.NopPruner()
    return optuna.create_study(direction=block.objective.direction, sampler=the_sampler, pruner=the_pruner)


# ---------------------------------------------------------------------------- what is stored


@dataclass
class Trial:
    """One stored trial, as tables, plots and the study's rebuild read it."""

    number: int
    run_id: int
    key: str
    row: str
    status: str
    params: dict[str, Any]
    value: float | None  # the objective: the best epoch's valid metric (pruned: its last one)
    intermediate: dict[int, float] = field(default_factory=dict)  # epoch -> valid metric
    test: float | None = None
    epochs: int | None = None
    config: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None


def stored_trials(store, name: str, metric: str) -> list[Trial]:
    """The trials of search experiment ``name`` in the order they were asked."""
    out = []
    for m in store.members(name):
        run = m.run
        inter = {e.epoch: float(e.valid[metric]) for e in run.epochs if e.valid and metric in e.valid}
        if run.status == "done":
            value = run.metric("valid", metric)
        elif run.status == "pruned" and inter:
            value = inter[max(inter)]
        else:
            value = None
        out.append(Trial(m.position, run.id, run.key, m.row, run.status, dict(m.point or {}), value, inter,
                         run.metric("test", metric), run.epoch, dict(run.config), run.seed))
    return out


def best(trials: list[Trial], direction: str) -> list[Trial]:
    """Finished (``done``) trials, best objective first."""
    done = [t for t in trials if t.status == "done" and t.value is not None]
    return sorted(done, key=lambda t: -t.value if direction == "maximize" else t.value)


# ---------------------------------------------------------------------------- the planner


class StudyPlanner:
    """The scheduler's planner (:class:`ablate.scheduler.Planner`) for one search: asks
    Optuna for trials while slots are free and the budget lasts, reports each epoch's valid
    score to it for pruning, and tells it each result, read back from the store."""

    def __init__(self, store, search: Search, trials: int, study=None, adopt: set[int] | frozenset = frozenset()):
        self.store, self.search, self.budget = store, search, trials
        self.spec_named = search.spec.model_copy(update={"name": search.name})
        self.study = study if study is not None else make_study(search.block)
        self.dists = search.distributions()
        self.trial_of: dict[int, Any] = {}  # run id -> its Optuna trial, while it runs
        self.waiting: dict[int, list] = {}  # run id -> repeated proposals told when it ends
        self.answered = 0  # trials answered from runs stored before this search asked them
        self.repeats = 0
        self.exhausted = False
        self.view = None
        stored = stored_trials(store, search.name, search.metric)
        self.runs = [self._as_runspec(t) for t in stored]
        self.keys = {t.key: t.run_id for t in stored}
        store.sync_experiment(self.spec_named, self.runs)  # the experiment exists from the first start on
        # trials whose end is not stored: a dead coordinator's (stale), interrupted, stalled
        ids = [t.run_id for t in stored]
        store.requeue(ids, retry=False)
        again = [t.run_id for t in stored if t.status in ("interrupted", "stalled")]
        if again:
            store.requeue(again, retry=True)
        self.skipped = 0
        self.pending: list[int] = []
        now = stored_trials(store, search.name, search.metric)
        # trials a dead coordinator's cluster jobs still train (``adopt``): asked again with
        # their own values and watched, not trained again; any other running trial has a
        # live coordinator, which owns it and the experiment's membership
        self.adopted: list[int] = []
        busy = [t for t in now if t.status == "running" and t.run_id not in adopt]
        if busy:
            raise UsageError(f"{search.name}: trial {busy[0].number} (run {busy[0].run_id}) is running under another "
                             "coordinator; one ablate search of a spec at a time")
        for t in now:
            if t.status in UNFINISHED:
                self.study.enqueue_trial(t.params, skip_if_exists=False)
                self.trial_of[t.run_id] = self.study.ask(self.dists)
                (self.adopted if t.status == "running" else self.pending).append(t.run_id)
                continue
            try:
                self.study.add_trial(_frozen(t, self.dists))
            except ValueError:  # the space was changed since: the trial stays, outside the study
                self.skipped += 1

    def _as_runspec(self, t: Trial) -> plan.RunSpec:
        role = "variant" if self.search.row in self.search.spec.variants else "baseline"
        return plan.RunSpec(key=t.key, name=t.row, variant=self.search.row, role=role, model=str(t.config.get("model")),
                            seed=int(t.seed or 0), config=t.config, point=t.params, position=t.number)

    # ---------------------------------------------------------------- Planner

    def propose(self) -> int | None:
        from ablate.store import Status

        while len(self.runs) < self.budget and not self.exhausted:
            trial = self.study.ask(self.dists)
            run = self.search.run_for(trial.params, position=len(self.runs))
            known = self.keys.get(run.key)
            if known is not None:  # a repeat of one of this search's trials: no new run, no count
                self.repeats += 1
                if self.repeats >= MAX_REPEATS:
                    self.exhausted = True
                if known in self.trial_of:
                    self.waiting.setdefault(known, []).append(trial)
                else:
                    self._tell(trial, known, replay=True)
                continue
            self.repeats = 0
            self.runs.append(run)
            self.store.sync_experiment(self.spec_named, self.runs)
            rid = self.store.primary_run_id(run.key)
            self.keys[run.key] = rid
            self.store.requeue([rid], retry=True)  # failed, or its coordinator died: this trial trains it
            status = self.store.get_run(rid).status
            if status in (Status.DONE.value, Status.PRUNED.value):
                self.answered += 1  # stored by an earlier sweep or search: told, not trained again
                self._tell(trial, rid, replay=True)
                continue
            if status == Status.RUNNING.value:  # under another coordinator: not ours to wait for
                self.study.tell(trial, state=_state("FAIL"))
                continue
            self.trial_of[rid] = trial
            if self.view is not None:
                self.view.total += 1
            return rid
        return None

    def on_valid(self, run_id: int, event: dict) -> bool:
        trial = self.trial_of.get(run_id)
        value = (event.get("valid") or {}).get(self.search.metric)
        if trial is None or value is None or not math.isfinite(value):
            return False
        trial.report(float(value), int(event["epoch"]))
        return trial.should_prune()

    def on_finished(self, run_id: int, status: str) -> None:
        trial = self.trial_of.pop(run_id, None)
        if trial is None or status == "interrupted":
            return  # interrupted: asked again with its own values by the next start
        self._tell(trial, run_id, replay=False)
        for other in self.waiting.pop(run_id, []):
            self._tell(other, run_id, replay=True)

    # ---------------------------------------------------------------- telling

    def _tell(self, trial, run_id: int, replay: bool) -> None:
        """Tell Optuna a trial's result as the store holds it (``replay``: its per-epoch
        valid scores too, for a trial that did not run under this study)."""
        t = next(x for x in stored_trials(self.store, self.search.name, self.search.metric) if x.run_id == run_id)
        if replay:
            for epoch, value in sorted(t.intermediate.items()):
                trial.report(value, epoch)
        if t.status == "done" and t.value is not None and math.isfinite(t.value):
            self.study.tell(trial, t.value)
        elif t.status == "pruned":
            self.study.tell(trial, state=_state("PRUNED"))
        else:
            self.study.tell(trial, state=_state("FAIL"))


def _state(name: str):
    from optuna.trial import TrialState

    return TrialState[name]


def _frozen(t: Trial, dists: dict):
    """A stored trial as Optuna's FrozenTrial (``study.add_trial``)."""
    from optuna.trial import create_trial

    if t.status == "done" and t.value is not None and math.isfinite(t.value):
        state, value = "COMPLETE", t.value
    elif t.status == "pruned":
        state, value = "PRUNED", None
    else:
        state, value = "FAIL", None
    if set(t.params) != set(dists):
        raise ValueError("the space has other parameters now")
    return create_trial(params=t.params, distributions=dists, value=value, state=_state(state),
                        intermediate_values=t.intermediate, user_attrs={"run_id": t.run_id})


# ---------------------------------------------------------------------------- reading back


def open_search(store, target: str, overrides: dict | None = None) -> tuple[SearchSpec, str, str, str]:
    """(search block, experiment name, metric, direction) for a spec file or a stored
    search experiment name (its spec text is read from the store)."""
    from pathlib import Path

    from ablate import spec as spec_mod

    p = Path(target)
    if p.suffix in (".yaml", ".yml") or p.is_file():
        spec = spec_mod.load_spec(p)
        found = prepare(spec, overrides)
        return found.block, found.name, found.metric, found.direction
    name = target if target.endswith(SUFFIX) else target + SUFFIX
    exp = store.experiment(name)
    if exp is None or not exp.spec_text:
        raise UsageError(f"no search experiment {name!r} in {store.db} (run `ablate search SPEC` first)")
    spec = spec_mod.parse_spec(exp.spec_text, exp.spec_path or name)
    block = spec.search
    if block is None:
        raise UsageError(f"experiment {name!r} is not a search")
    metric = block.objective.metric
    if metric is None:
        trials = stored_trials(store, name, "")
        metric = str((trials[0].config if trials else {}).get("valid_metric") or "MRR@10")
    return block, name, metric.lower(), block.objective.direction
