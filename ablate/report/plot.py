"""PNG figures with matplotlib (Agg, no display): a metric along a swept parameter, and
per-epoch training curves. A sweep such as k2 = 2..50 reads better as a curve than as
forty table rows."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from ablate.errors import UsageError  # noqa: E402
from ablate.report.frame import ExperimentFrame  # noqa: E402

RUN_FIELDS = ("row", "variant", "model", "role", "seed")


def _lookup(run: pd.Series, name: str):
    if name in RUN_FIELDS:
        return run[name]
    point = run["point"] or {}
    if name in point:
        return point[name]
    return (run["config"] or {}).get(name)


def sweep_points(frame: ExperimentFrame, x: str, y: str, hue: str | None = "variant") -> pd.DataFrame:
    """One line per (hue, x): mean, std and n over the done runs (seeds) at that point."""
    y = y.lower()
    if y not in frame.values.columns:
        have = ", ".join(sorted(frame.values.columns)) or "none"
        raise UsageError(f"--y {y!r} was not recorded (have: {have})")
    done = frame.runs[frame.runs["status"] == "done"].drop_duplicates("run_id")
    records = []
    for _, run in done.iterrows():
        xv = _lookup(run, x)
        if xv is None:
            continue
        try:
            yv = frame.values.at[(run["row"], run["seed"]), y]
        except KeyError:
            continue
        records.append({"hue": str(_lookup(run, hue)) if hue else "", "x": xv, "y": yv})
    if not records:
        raise UsageError(f"--x {x!r}: no done run has it in its grid point or config")
    df = pd.DataFrame(records).dropna(subset=["y"])
    out = df.groupby(["hue", "x"], sort=False)["y"].agg(["mean", "std", "count"]).reset_index()
    return out.rename(columns={"count": "n"})


def plot_sweep(points: pd.DataFrame, x: str, y: str, out: Path, title: str | None = None) -> Path:
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    numeric = pd.api.types.is_numeric_dtype(points["x"])
    cats = list(dict.fromkeys(points["x"])) if not numeric else None
    for hue, g in points.groupby("hue", sort=False):
        g = g.sort_values("x") if numeric else g
        xs = g["x"] if numeric else [cats.index(v) for v in g["x"]]
        ax.errorbar(xs, g["mean"], yerr=g["std"].fillna(0), marker="o", capsize=3, label=hue or None)
    if cats is not None:
        ax.set_xticks(range(len(cats)), [str(c) for c in cats], rotation=30)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    if title:
        ax.set_title(title)
    if points["hue"].nunique() > 1 or (points["hue"] != "").any():
        ax.legend(fontsize="small")
    ax.grid(alpha=0.3)
    return _save(fig, out)


def plot_curves(history: pd.DataFrame, labels: dict[int, str], out: Path) -> Path:
    """One panel per loss term plus one for the valid score; one line per run."""
    if history.empty:
        raise UsageError("no per-epoch records for these runs")
    terms = [c for c in history.columns if c not in ("run_id", "epoch", "valid_score")]
    panels = terms + (["valid_score"] if history["valid_score"].notna().any() else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.4), squeeze=False)
    for ax, col in zip(axes[0], panels):
        for rid, g in history.groupby("run_id", sort=False):
            g = g.dropna(subset=[col])
            if not g.empty:
                ax.plot(g["epoch"], g[col], marker=".", label=labels.get(int(rid), str(rid)))
        ax.set_title(col)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize="small")
    return _save(fig, out)


def _save(fig, out: Path) -> Path:
    out = Path(out)
    if out.parent and not out.parent.exists():
        raise UsageError(f"-o {out}: folder {out.parent} does not exist")
    fig.tight_layout()
    fig.savefig(out, dpi=120, format="png")
    plt.close(fig)
    return out
