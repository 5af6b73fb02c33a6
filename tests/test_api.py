"""The Python API as a researcher drives it from Jupyter: real runs on ml-100k into a real
SQLite file, read back as DataFrames, and option objects that refuse bad values at once.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from rich.console import Console

import ablate.api as ab
from ablate.errors import OptionError, UsageError

from tests.specs import tiny_yaml

VARIANTS = {
    "lr": {"model": "BPR", "params": {"learning_rate": 1.0e-5}},
    "same": {"model": "BPR", "params": {"stopping_step": 5}},  # another key, the same training in 1 epoch
}
SPEC = tiny_yaml("apitiny", topk=[10, 20], variants=VARIANTS)

QUIET = Console(quiet=True)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    d = tmp_path_factory.mktemp("api")
    spec = d / "apitiny.yaml"
    spec.write_text(SPEC)
    db = str(d / "results.db")
    result = ab.run(spec, db=db, on=ab.Local(jobs=2), console=QUIET)
    return spec, db, result


def test_run_returns_what_happened(swept):
    spec, db, result = swept
    assert result.exit_code == 0
    assert result.experiment == "apitiny" and len(result.run_ids) == 3
    assert result.summary.finished == {"done": 3}
    again = ab.run(spec, db=db, on=ab.Local(jobs=1), console=QUIET)
    assert again.pending == 0 and again.summary is None and again.exit_code == 0  # nothing trained twice


def test_table_is_a_dataframe_with_the_marks_as_data(swept):
    _, db, _ = swept
    df = ab.table("apitiny", db=db, metrics=["recall@10", "ndcg@10"])
    assert list(df.index) == ["BPR", "lr", "same"]
    assert list(df["kind"]) == ["baseline", "variant", "variant"]
    for m in ("recall@10", "ndcg@10"):
        values = df[m].round(4)  # marks compare the numbers as printed (4 decimals)
        best, second = sorted(set(values), reverse=True)[:2]
        assert list(df[f"{m}_rank"]) == ["best" if v == best else "second" if v == second else "" for v in values]
        assert df.loc["BPR", f"{m}_rank"] == df.loc["same", f"{m}_rank"] != ""  # the same numbers, the same mark
    assert "≡ BPR" in df.loc["same", "note"] and df.loc["lr", "note"] == ""
    rendered = ab.comparison("apitiny", db=db, metrics=["recall@10", "ndcg@10"])
    cell = next(r for r in rendered.rows if r.name == "lr").cells["recall@10"]
    assert cell.mean == df.loc["lr", "recall@10"]  # the same numbers the markdown table prints


def test_runs_and_curves(swept):
    _, db, result = swept
    runs = ab.runs("apitiny", db=db)
    assert sorted(runs.index) == sorted(result.run_ids)
    assert set(runs["status"]) == {"done"} and {"recall@10", "valid_recall@10"} <= set(runs.columns)
    assert all(0 <= v <= 1 for v in runs["recall@20"])
    curves = ab.curves(result.run_ids, db=db)
    assert sorted(curves["run_id"]) == sorted(result.run_ids) and set(curves["epoch"]) == {0}
    assert math.isfinite(curves["loss"].iloc[0])
    with pytest.raises(UsageError, match="no run with id 999"):
        ab.curves([999], db=db)


def test_a_rerun_reproduces_and_a_variation_is_a_new_config(swept):
    _, db, result = swept
    again = ab.rerun(result.run_ids[0], db=db, on=ab.Local(jobs=1), console=QUIET)
    assert again.reproduced is True and again.exit_code == 0 and again.compared > 0
    varied = ab.rerun(result.run_ids[0], db=db, seed=7, on=ab.Local(jobs=1), console=QUIET)
    assert varied.reproduced is None and varied.variation == {"seed": 7} and varied.new.key != again.new.key


def test_plan_shows_what_run_would_do(swept, tmp_path):
    spec, db, _ = swept
    plan = ab.plan(spec, db=db)
    assert [r.stored for r in plan.rows] == [True, True, True] and plan.duplicates == []
    fresh = ab.plan(spec, db=str(tmp_path / "none.db"), overrides={"epochs": 2}, fuse="auto")
    assert fresh.experiment == "apitiny[epochs=2]" and not any(r.stored for r in fresh.rows)
    assert fresh.groups == 0  # BPR is not a graph model: nothing fuses


@pytest.mark.parametrize("make,option,message", [
    (lambda: ab.Local(per_gpu=0), "per_gpu", "per_gpu must be at least 1"),
    (lambda: ab.Local(per_gpu="many"), "per_gpu", "per_gpu expects a number or 'auto', got 'many'"),
    (lambda: ab.Local(jobs=0), "jobs", "jobs must be at least 1"),
    (lambda: ab.Local(gpus=","), "gpus", "gpus expects ids like 0,1"),
    (lambda: ab.Slurm(time="soon"), "time", "time expects [D-]HH:MM:SS or minutes, got 'soon'"),
    (lambda: ab.Slurm(gpus_per_job=-1), "gpus_per_job", "gpus_per_job must be 0 or more"),
    (lambda: ab.Slurm(array_parallelism=0), "array_parallelism", "array_parallelism must be at least 1"),
])
def test_options_are_checked_when_made(make, option, message):
    with pytest.raises(OptionError) as err:
        make()
    assert err.value.option == option and str(err.value) == message


def test_run_refuses_bad_values_before_touching_the_store(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC)
    db = tmp_path / "r.db"
    with pytest.raises(OptionError, match=r"^fuse many: expected auto, off or a group size"):
        ab.run(spec, db=str(db), fuse="many", console=QUIET)
    with pytest.raises(OptionError, match="^timeout must be positive"):
        ab.run(spec, db=str(db), timeout=0, console=QUIET)
    assert not Path(db).exists()


def test_search_from_python(tmp_path):
    spec = tmp_path / "se.yaml"
    spec.write_text(tiny_yaml("apise", topk=[10, 20], variants=VARIANTS, search={
        "variant": "lr", "space": {"learning_rate": {"choice": [0.001, 0.01]}}, "objective": "ndcg@10", "trials": 2,
        "pruner": {"kind": "none"}}))
    db = str(tmp_path / "s.db")
    found = ab.search_plan(spec)
    assert (found.row, found.metric, found.direction) == ("lr", "ndcg@10", "maximize")
    result = ab.search(spec, db=db, on=ab.Local(jobs=1), console=QUIET)
    assert result.exit_code == 0 and result.name == "apise.search"
    assert sorted(t.params["learning_rate"] for t in result.trials) == [0.001, 0.01]
    assert {t.status for t in result.trials} == {"done"}
    best = max(result.trials, key=lambda t: t.value)
    assert result.best.run_id == best.run_id
    again = ab.search(spec, db=db, on=ab.Local(jobs=1), console=QUIET)  # the budget is spent: nothing trains
    assert again.summary.finished == {} and [t.run_id for t in again.trials] == [t.run_id for t in result.trials]
    with pytest.raises(OptionError, match="^trials must be at least 1"):
        ab.search(spec, db=db, trials=0, console=QUIET)
