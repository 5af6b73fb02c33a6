"""Helpers for the report tests: a store filled directly (``from tests.report.report_store import fill``)."""

from __future__ import annotations

from pathlib import Path

from ablate.store import Epoch, Experiment, Member, Metric, Run, Store


def fill(db: Path, rows: list[dict], name: str = "exp") -> Store:
    """Insert an experiment directly: each dict is one run with ``row``, ``role``
    (default variant), ``seed``, ``status`` (default done), ``metrics`` {name: value}
    (test split; ``valid`` for the valid split), ``losses`` [per-epoch dicts], ``point``."""
    store = Store(str(db))
    with store.session() as s:
        exp = s.query(Experiment).filter_by(name=name).one_or_none()
        if exp is None:
            exp = Experiment(name=name)
            s.add(exp)
            s.flush()
        base = s.query(Run).count()
        for i, r in enumerate(rows):
            config = {"model": r.get("model", "LightGCN"), "seed": r.get("seed", 2020), "row": r["row"], **r.get("config", {})}
            run = Run(key=r.get("key", f"k{base + i}"), name=r["row"], model=config["model"], dataset="ml-100k",
                      seed=config["seed"], config=config, status=r.get("status", "done"), log_path=r.get("log_path"))
            s.add(run)
            s.flush()
            s.add(Member(experiment_id=exp.id, run_id=run.id, row=r["row"], variant=r.get("variant", r["row"]),
                         role=r.get("role", "variant"), position=r.get("position", i), point=r.get("point", {})))
            for split, values in (("test", r.get("metrics", {})), ("valid", r.get("valid", {}))):
                for k, v in values.items():
                    s.add(Metric(run_id=run.id, split=split, name=k, value=v))
            for e, losses in enumerate(r.get("losses", [])):
                s.add(Epoch(run_id=run.id, epoch=e, losses=losses, valid_score=0.1 + 0.01 * e))
    return store
