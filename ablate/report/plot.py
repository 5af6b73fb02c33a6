"""Figures with matplotlib (Agg, no display): a metric along a swept parameter, and
per-epoch training curves. A sweep such as k2 = 2..50 reads better as a curve than as
forty table rows.

A figure must not mislead, so every choice that could is made here, once, for the PNG of
``ablate plot`` and the inline SVG of ``ablate report`` alike:

* a run (curves) or a line (sweeps) keeps one colour and marker in every panel, and the
  figure has one legend; a panel without a run's loss term simply lacks that run;
* a swept parameter spanning orders of magnitude (``ot_weight`` 1e-7 and 0.1) goes on a
  log axis, decided from the values (:func:`log_scale`) unless the caller says;
* the baseline the table compares against is drawn as a labelled line with its
  mean ± std band over seeds, and every point carries its error bar over seeds.
"""

from __future__ import annotations

import io
import itertools
import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from ablate.errors import OptionError, UsageError  # noqa: E402
from ablate.report.frame import ExperimentFrame  # noqa: E402

RUN_FIELDS = ("row", "variant", "model", "role", "seed")
# Colour-blind-safe cycle (matplotlib's tab10) and markers told apart in grey print too.
COLOURS = plt.get_cmap("tab10").colors
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "*")
LINESTYLES = ("-", "--", ":", "-.")
SPAN = 100.0  # largest / smallest positive value at or above which an axis goes log


@dataclass(frozen=True)
class Style:
    """How one run or line is drawn, the same in every panel."""

    color: tuple
    marker: str
    linestyle: str = "-"

    def kw(self) -> dict:
        return {"color": self.color, "marker": self.marker, "linestyle": self.linestyle}


def styles(groups: list[str], members: dict[str, list] | None = None) -> dict:
    """A :class:`Style` per group (colour and marker from its position), and within a
    group per member (a seed's run: the group's colour, its own line style), so two runs
    never share a look and a variant's seeds read as one family."""
    out: dict = {}
    for i, g in enumerate(dict.fromkeys(groups)):
        base = Style(COLOURS[i % len(COLOURS)], MARKERS[(i // len(COLOURS) + i) % len(MARKERS)])
        out[g] = base
        for j, m in enumerate((members or {}).get(g, [])):
            out[m] = Style(base.color, base.marker, LINESTYLES[j % len(LINESTYLES)])
    return out


def _lookup(run: pd.Series, name: str):
    if name in RUN_FIELDS:
        return run[name]
    point = run["point"] or {}
    if name in point:
        return point[name]
    return (run["config"] or {}).get(name)


def _hue_label(run: pd.Series, x: str, hue: str | None) -> str:
    """The line a run belongs to: its ``hue`` value, and the other grid values of its
    point (a k2 sweep run at k1 = 1 and k1 = 3 is two lines, never one averaged line)."""
    parts = [str(_lookup(run, hue))] if hue else []
    others = {k: v for k, v in (run["point"] or {}).items() if k != x and k != hue}
    parts += [f"{k}={v}" for k, v in sorted(others.items())]
    return ", ".join(parts)


def baseline_row(frame: ExperimentFrame, baseline: str | None = None) -> str | None:
    """The row a table of ``frame`` compares against: ``baseline`` when given (it must
    be a row), else the first declared baseline (as :func:`ablate.report.table.build`)."""
    if baseline is not None:
        if baseline not in frame.rows:
            raise OptionError("baseline", f"is not a row of this experiment (rows: {', '.join(frame.rows[:10])})", value=repr(baseline), sep=" ")
        return baseline
    return next((r for r in frame.rows if frame.role.get(r) == "baseline"), None)


def sweep_points(frame: ExperimentFrame, x: str, y: str, hue: str | None = "variant",
                 exclude: tuple[str, ...] = ()) -> pd.DataFrame:
    """One line per (hue, x): mean, std and n over the done runs (seeds) at that point.
    Rows in ``exclude`` (the baseline drawn as a reference line) are left out."""
    y = y.lower()
    if y not in frame.values.columns:
        have = ", ".join(sorted(frame.values.columns)) or "none"
        raise OptionError("y", f"was not recorded (have: {have})", value=repr(y), sep=" ")
    done = frame.runs[frame.runs["status"] == "done"].drop_duplicates("run_id")
    records = []
    for _, run in done.iterrows():
        if run["row"] in exclude:
            continue
        xv = _lookup(run, x)
        if xv is None:
            continue
        try:
            yv = frame.values.at[(run["row"], run["seed"]), y]
        except KeyError:
            continue
        records.append({"hue": _hue_label(run, x, hue), "x": xv, "y": yv})
    if not records:
        raise OptionError("x", "no done run has it in its grid point or config", value=repr(x))
    df = pd.DataFrame(records).dropna(subset=["y"])
    out = df.groupby(["hue", "x"], sort=False)["y"].agg(["mean", "std", "count"]).reset_index()
    return out.rename(columns={"count": "n"})


def baseline_band(frame: ExperimentFrame, y: str, row: str | None) -> dict | None:
    """``{"name", "mean", "std", "n"}`` of ``row``'s ``y`` over its seeds (std NaN for one
    seed); None without a row or a value."""
    y = y.lower()
    if row is None or y not in frame.metrics:
        return None
    i = frame.rows.index(row)
    mean, std, n = frame.column(y, "means")[i], frame.column(y, "stds")[i], int(frame.counts[i])
    if n == 0 or mean != mean:
        return None
    return {"name": row, "mean": float(mean), "std": float(std), "n": n}


def log_scale(values) -> str | None:
    """``"log"`` when positive numbers span at least :data:`SPAN` (1e-7 and 0.1 on a
    linear axis is one point at 0 and one at the edge); ``"symlog"`` when they also
    include 0; None (linear) otherwise, and for anything not numeric."""
    try:
        nums = [float(v) for v in values]
    except (TypeError, ValueError):
        return None
    if any(isinstance(v, bool) for v in values) or not nums or any(math.isnan(v) for v in nums):
        return None
    pos = [v for v in nums if v > 0]
    if any(v < 0 for v in nums) or len(pos) < 2 or max(pos) / min(pos) < SPAN:
        return None
    return "symlog" if len(pos) < len(nums) else "log"


def sweep_figure(points: pd.DataFrame, x: str, y: str, *, title: str | None = None, logx: bool | None = None,
                 baseline: dict | None = None):
    """Mean ± std (error bars over seeds) of ``y`` along ``x``, a line per hue, and the
    baseline (:func:`baseline_band`) as a labelled horizontal line with its ± std band.
    ``logx``: None decides from the values (:func:`log_scale`), True/False forces."""
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    numeric = pd.api.types.is_numeric_dtype(points["x"]) and not pd.api.types.is_bool_dtype(points["x"])
    cats = list(dict.fromkeys(points["x"])) if not numeric else None
    look = styles(list(points["hue"]))
    for hue, g in points.groupby("hue", sort=False):
        g = g.sort_values("x") if numeric else g
        xs = g["x"] if numeric else [cats.index(v) for v in g["x"]]
        n = int(g["n"].max())
        label = (hue or y) + (f" (n={n})" if n > 1 else "")
        ax.errorbar(xs, g["mean"], yerr=g["std"].fillna(0), capsize=3, label=label, **look[hue].kw())
    if cats is not None:
        ax.set_xticks(range(len(cats)), [str(c) for c in cats], rotation=30)
        scale = None
    else:
        scale = log_scale(points["x"].tolist()) if logx is None else ("log" if logx else None)
        if scale == "log" and (points["x"] <= 0).any():
            scale = "symlog"
    if scale == "symlog":
        pos = points["x"][points["x"] > 0]
        ax.set_xscale("symlog", linthresh=float(pos.min()) if len(pos) else 1.0)
    elif scale == "log":
        ax.set_xscale("log")
    if baseline is not None:
        name = f"{baseline['name']} (baseline" + (f", n={baseline['n']})" if baseline["n"] > 1 else ")")
        ax.axhline(baseline["mean"], color="0.25", linestyle="--", linewidth=1.2, label=name, zorder=1)
        if baseline["n"] > 1 and baseline["std"] == baseline["std"]:
            ax.axhspan(baseline["mean"] - baseline["std"], baseline["mean"] + baseline["std"], color="0.25",
                       alpha=0.12, linewidth=0, label=f"{baseline['name']} ± std", zorder=0)
    ax.set_xlabel(x + (" (log scale)" if scale else ""))
    ax.set_ylabel(y)
    if title:
        ax.set_title(title)
    handles, labels = ax.get_legend_handles_labels()
    if len(handles) > 1 or (points["hue"] != "").any():
        ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_sweep(points: pd.DataFrame, x: str, y: str, out: Path, title: str | None = None, *,
               logx: bool | None = None, baseline: dict | None = None) -> Path:
    return _save(sweep_figure(points, x, y, title=title, logx=logx, baseline=baseline), out)


def curve_panels(history: pd.DataFrame) -> list[str]:
    """Loss terms in the order the runs reported them, then the valid score if any."""
    terms = [c for c in history.columns if c not in ("run_id", "epoch", "valid_score")]
    return terms + (["valid_score"] if history["valid_score"].notna().any() else [])


def curves_figure(history: pd.DataFrame, labels: dict[int, str], groups: dict[int, str] | None = None,
                  palette: dict | None = None):
    """One panel per loss term plus one for the valid score; one line per run, drawn
    alike in every panel (``groups``: run id -> row, whose runs share a colour and
    marker and differ by line style); a run without a term is absent from its panel.
    One legend for the whole figure, below the panels. ``palette`` (:func:`styles` of a
    larger set) keeps a run's look across several figures of one page."""
    if history.empty:
        raise UsageError("no per-epoch records for these runs")
    panels = curve_panels(history)
    ids = [int(r) for r in dict.fromkeys(history["run_id"])]
    ids += [i for i in labels if i not in ids]  # a run without epochs still gets its legend entry
    groups = groups or {i: str(i) for i in ids}
    members = {}
    for i in ids:
        members.setdefault(groups.get(i, str(i)), []).append(i)
    many = {g: m for g, m in members.items() if len(m) > 1}
    look = palette if palette is not None else styles([groups.get(i, str(i)) for i in ids], many)
    run_style = {i: look.get(i, look[groups.get(i, str(i))]) for i in ids}
    cols = min(len(panels), 4)
    nrows = -(-len(panels) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.4 * cols, 2.9 * nrows + 0.3 * (1 + len(ids) // 3)),
                             squeeze=False, layout="constrained")
    handles: dict[str, object] = {}
    by_run = {int(rid): g for rid, g in history.groupby("run_id", sort=False)}
    for ax, col in zip(itertools.chain.from_iterable(axes), panels):
        for rid in ids:
            g = by_run.get(rid)
            if g is None:
                continue
            g = g.dropna(subset=[col])
            if g.empty:
                continue  # this run has no such term: absent, not drawn in another's colour
            label = labels.get(rid, str(rid))
            (line,) = ax.plot(g["epoch"], g[col], label=label, markersize=4, **run_style[rid].kw())
            handles.setdefault(label, line)
        ax.set_title(col)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in list(itertools.chain.from_iterable(axes))[len(panels):]:
        ax.set_visible(False)
    if handles:
        fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncol=min(3, len(handles)),
                   fontsize="small", frameon=False)
    return fig


def plot_curves(history: pd.DataFrame, labels: dict[int, str], out: Path, groups: dict[int, str] | None = None) -> Path:
    return _save(curves_figure(history, labels, groups), out, tight=False)


def to_svg(fig) -> str:
    """The figure as an ``<svg>`` element to inline in HTML (no XML prolog, text as
    text: smaller, and selectable in the page), then closed."""
    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        fig.savefig(buf, format="svg")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


def _save(fig, out: Path, tight: bool = True) -> Path:
    out = Path(out)
    if out.parent and not out.parent.exists():
        plt.close(fig)
        raise OptionError("out", f"folder {out.parent} does not exist", value=out)
    if tight:
        fig.tight_layout()
    fig.savefig(out, dpi=120, format="png")
    plt.close(fig)
    return out
