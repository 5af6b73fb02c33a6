"""``ablate report``: one self-contained HTML page to share an experiment.

The page is one more renderer of what ``ablate table`` and ``ablate plot`` already
decide: the comparison table is the :class:`~ablate.report.table.Table` that
``--md`` prints (its marks are read, never recomputed), the figures are
:mod:`ablate.report.plot`'s, inlined as SVG. Everything else on the page is read from the
store in the same few queries: each row's runs and their config against the baseline
(:func:`ablate.report.runinfo.config_diff`), status counts, failed runs with their errors, and
the code versions and git commits the runs were trained by.

Nothing is fetched when the page is opened (no script, style or font from the network,
no server): it is one file to attach to an email or a pull request. The template is
package data (``templates/report.html.j2``); Jinja2 escapes every value from the store.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ablate.errors import OptionError, UsageError
from ablate.report import table as table_mod
from ablate.report.table import Table

ACTIVE = ("pending", "running", "done")  # statuses that are not a failure
# Rows up to which one figure overlays every run's curves; past it the lines and the
# legend cannot be told apart, and each row's own figure below says it all.
OVERVIEW_ROWS = 12


@dataclass
class Section:
    """One table row's part of the page: its anchor, runs, config diff and curves."""

    name: str
    anchor: str
    role: str
    runs: list[dict] = field(default_factory=list)
    diff: list[tuple[str, str, str]] = field(default_factory=list)
    diff_against: str | None = None
    curves: str | None = None  # inline SVG


def table_context(table: Table, anchors: dict[str, str]) -> dict:
    """The table as the template draws it: every mark taken from ``table``'s cells (the
    same decisions ``--md`` prints), each ranked cell with the number a click sorts by."""
    notes = table.has_notes
    body, top, bottom = [], [], []
    for row in table.rows:
        cells = []
        for m in table.metrics:
            c = row.cells[m]
            if row.kind == "summary":
                cells.append({"text": table_mod._pct(c.delta) if c.delta is not None else "", "sort": ""})
            elif c.mean is None:
                cells.append({"status": c.status or "", "sort": ""})
            else:
                cells.append({"text": table_mod._core(c, table.precision, "±"), "rank": c.rank, "sig": c.sig,
                              "tie": table_mod.TIE_MARK if c.tie else "",
                              "delta": table_mod.delta_text(c),
                              "p": "" if c.p is None else (f"p = {c.p:.3g}" + (
                                  "" if c.p_adjusted is None else f", corrected {c.p_adjusted:.3g}")),
                              "sort": repr(c.mean)})
        item = {"label": row.label, "kind": row.kind, "anchor": anchors.get(row.name), "cells": cells,
                "note": "; ".join(row.flags)}
        (top if row.kind == "reference" else bottom if row.kind == "summary" else body).append(item)
    return {"headers": table.headers, "metrics": table.metrics, "reference": top, "rows": body, "summary": bottom,
            "notes": notes, "reference_note": table.reference_note, "baseline": table.baseline,
            "test_notes": list(table.test_notes)}


def _fmt_value(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _run_dict(run, frame_rec: dict) -> dict:
    return {"id": run.id, "seed": run.seed, "status": run.status, "model": run.model,
            "wall": "" if run.wall_seconds is None else f"{run.wall_seconds:.1f} s",
            "best_epoch": "" if run.best_epoch is None else run.best_epoch, "device": run.device or "",
            "error": run.error or "", "row": frame_rec["row"], "key": run.key}


def sections(frame, runs: dict[int, object], history, baseline: str | None) -> tuple[list[Section], str | None]:
    """A :class:`Section` per table row, and an overview figure of every run's curves
    (up to :data:`OVERVIEW_ROWS` rows).

    A row's config is diffed against the baseline row's run of the same seed (its first
    run when no seed matches), as ``ablate show`` does; a row's curves keep the colour
    the row has in the overview."""
    from ablate.report.runinfo import config_diff
    from ablate.report import plot as plot_mod

    recs = frame.runs.drop_duplicates(["row", "run_id"])
    by_row: dict[str, list] = {}
    for rec in recs.to_dict("records"):
        by_row.setdefault(rec["row"], []).append(rec)
    base_recs = by_row.get(baseline, []) if baseline else []
    anchors = {row: f"row-{i}" for i, row in enumerate(frame.rows)}
    ids = [int(r) for r in recs["run_id"]]
    labels = {rid: f"{runs[rid].name} (#{rid}, seed {runs[rid].seed})" for rid in ids if rid in runs}
    groups = {int(rec["run_id"]): rec["row"] for rec in recs.to_dict("records")}
    members: dict[str, list[int]] = {}
    for rid, row in groups.items():
        members.setdefault(row, []).append(rid)
    palette = plot_mod.styles(list(frame.rows), {r: m for r, m in members.items() if len(m) > 1})
    has_history = history is not None and not history.empty
    overview = None
    if has_history and len(frame.rows) <= OVERVIEW_ROWS:
        overview = plot_mod.to_svg(plot_mod.curves_figure(history, labels, groups, palette))
    out = []
    for row in frame.rows:
        sec = Section(name=row, anchor=anchors[row], role=frame.role.get(row, ""))
        mine = by_row.get(row, [])
        sec.runs = [_run_dict(runs[int(r["run_id"])], r) for r in mine if int(r["run_id"]) in runs]
        if base_recs and row != baseline and mine:
            own = mine[0]
            base = next((b for b in base_recs if b["seed"] == own["seed"]), base_recs[0])
            sec.diff = [(k, _fmt_value(a), _fmt_value(b)) for k, a, b in config_diff(own["config"] or {}, base["config"] or {})]
            sec.diff_against = f"{baseline} (run {int(base['run_id'])}, seed {base['seed']})"
        if has_history:
            mine_ids = [int(r["run_id"]) for r in mine]
            h = history[history["run_id"].isin(mine_ids)]
            if not h.empty:
                h = h.dropna(axis=1, how="all")  # a row's panels are its own terms
                if "valid_score" not in h.columns:
                    h = h.assign(valid_score=math.nan)
                sec.curves = plot_mod.to_svg(plot_mod.curves_figure(h, {i: labels[i] for i in mine_ids if i in labels},
                                                                    groups, palette))
        out.append(sec)
    return out, overview


def grid_axes(frame) -> list[str]:
    """The swept parameters: every key of a grid point, in order of first appearance."""
    keys: dict[str, None] = {}
    for point in frame.runs["point"]:
        for k in point or {}:
            keys.setdefault(k, None)
    return list(keys)


def sweep_plots(frame, y: str, baseline: str | None) -> list[dict]:
    """A figure per grid axis: ``y`` along it, the baseline as the reference line."""
    from ablate.report import plot as plot_mod

    out = []
    band = plot_mod.baseline_band(frame, y, baseline)
    for axis in grid_axes(frame):
        try:
            points = plot_mod.sweep_points(frame, axis, y, "variant", exclude=(baseline,) if baseline else ())
        except UsageError:
            continue  # no finished run on this axis yet
        if points.empty:
            continue
        fig = plot_mod.sweep_figure(points, axis, y, title=f"{y} along {axis}", baseline=band)
        out.append({"axis": axis, "svg": plot_mod.to_svg(fig)})
    return out


def provenance(runs: dict[int, object]) -> list[dict]:
    """The code the runs came from: one line per distinct (git commit, versions), with
    the runs trained by it (never-trained runs have neither and are left out)."""
    seen: dict[tuple, list[int]] = {}
    for rid, run in sorted(runs.items()):
        if run.git_commit is None and run.versions is None:
            continue
        key = (run.git_commit or "", json.dumps(run.versions or {}, sort_keys=True))
        seen.setdefault(key, []).append(rid)
    out = []
    for (commit, versions), ids in seen.items():
        out.append({"commit": commit or "unknown", "versions": sorted(json.loads(versions).items()),
                    "runs": ", ".join(f"#{i}" for i in ids), "n": len(ids)})
    return out


def build(db: str, targets: list[str] | None = None, *, overrides: dict | None = None, metrics: list[str] | None = None,
          split: str = "test", baseline: str | None = None, precision: int = 4, reference: Path | None = None,
          negligible: float = 0.01, y: str | None = None, test: str = "auto", correction: str = "holm",
          alpha: float = 0.05, ties: bool = False, ci: bool = True) -> dict:
    """Everything the page shows, read from the store ``db`` (the template's context)."""
    from ablate.report import frame as frame_mod
    from ablate.store import open_existing

    table = table_mod.from_store(db, targets, overrides=overrides, metrics=metrics, split=split, baseline=baseline,
                                 precision=precision, reference=reference, negligible=negligible, test=test,
                                 correction=correction, alpha=alpha, ties=ties, ci=ci)
    names = frame_mod.resolve_targets(db, targets, overrides)
    frame = frame_mod.load(db, names, split, with_config=True)
    store = open_existing(db)
    ids = frame.run_ids()
    runs = {r.id: r for r in store.runs(ids, with_children=False)}
    history = frame_mod.epoch_losses(db, ids)
    base = table.baseline
    if y is None:
        y = next((m for m in ("recall@20", *table.metrics) if m in frame.metrics), None)
    elif y.lower() not in frame.metrics:
        raise OptionError("y", f"was not recorded (have: {', '.join(frame.metrics) or 'none'})", value=repr(y), sep=" ")
    secs, overview = sections(frame, runs, history, base)
    anchors = {s.name: s.anchor for s in secs}
    counts = Counter(run.status for run in runs.values())
    failed = [_run_dict(run, {"row": run.name}) for run in runs.values() if run.status not in ACTIVE]
    return {
        "title": ", ".join(names),
        "names": names,
        "db": db,
        "split": split,
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "table": table_context(table, anchors),
        "plots": sweep_plots(frame, y.lower(), base) if y else [],
        "y": y,
        "overview": overview,
        "sections": secs,
        "has_history": history is not None and not history.empty,
        "counts": sorted(counts.items(), key=lambda kv: (ACTIVE + (kv[0],)).index(kv[0])),
        "total": len(runs),
        "failed": failed,
        "provenance": provenance(runs),
    }


def render(context: dict) -> str:
    """The page's HTML (figures inlined as SVG; Jinja2 escapes everything else)."""
    from jinja2 import Environment, PackageLoader, StrictUndefined
    from markupsafe import Markup

    env = Environment(loader=PackageLoader("ablate.report", "templates"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["svg"] = Markup  # matplotlib's own SVG, not text from the store
    return env.get_template("report.html.j2").render(**context)


def write(context: dict, out: Path) -> Path:
    out = Path(out)
    if out.parent and not out.parent.exists():
        raise OptionError("out", f"folder {out.parent} does not exist", value=out)
    out.write_text(render(context), encoding="utf-8")
    return out
