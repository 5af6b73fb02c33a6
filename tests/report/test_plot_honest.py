"""Figures that cannot mislead, read from their artists: a run keeps its colour in every
panel, terms a run lacks are absent, a sweep over orders of magnitude gets a log axis,
the baseline is a labelled reference line with its band, points carry error bars."""

from __future__ import annotations

import matplotlib.colors as mcolors
import numpy as np
import pytest
from matplotlib.container import ErrorbarContainer
from matplotlib.patches import Rectangle
from typer.testing import CliRunner

from ablate.cli import app
from ablate.report import plot

from tests.report.report_store import fill

runner = CliRunner()


@pytest.fixture
def figures(monkeypatch):
    """The figures the CLI saves, captured before they are closed."""
    got = []
    real = plot._save

    def keep(fig, out, **kw):
        got.append(fig)
        fig.canvas.draw()
        return real(fig, out, **kw)

    monkeypatch.setattr(plot, "_save", keep)
    return got


def cli(*args):
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    return res.output


def colour_by_label(fig) -> dict[str, set]:
    out: dict[str, set] = {}
    for ax in fig.axes:
        for line in ax.get_lines():
            out.setdefault(line.get_label(), set()).add((mcolors.to_hex(line.get_color()), line.get_marker(),
                                                          line.get_linestyle()))
    return out


@pytest.fixture
def curves_db(tmp_path):
    """LightGCN (bpr only), LightGCNOT (bpr, reg, ot) and a second seed of LightGCNOT."""
    db = tmp_path / "c.db"
    fill(db, [
        dict(row="LightGCN", role="baseline", seed=1, losses=[{"bpr": 0.69}, {"bpr": 0.5}, {"bpr": 0.4}]),
        dict(row="LightGCNOT", seed=1, losses=[{"bpr": 0.7, "reg": 0.01, "ot": 0.3}, {"bpr": 0.6, "reg": 0.02, "ot": 0.2}]),
        dict(row="LightGCNOT", seed=2, losses=[{"bpr": 0.71, "reg": 0.01, "ot": 0.31}, {"bpr": 0.61, "reg": 0.02, "ot": 0.21}]),
    ])
    return db


def test_curves_one_look_per_run_in_every_panel_and_one_legend(curves_db, tmp_path, figures):
    cli("plot", "--curves", 1, 2, 3, "-o", tmp_path / "c.png", "--db", curves_db)
    (fig,) = figures
    panels = {ax.get_title(): ax for ax in fig.axes if ax.get_visible()}
    assert list(panels) == ["bpr", "reg", "ot", "valid_score"]
    looks = colour_by_label(fig)
    base, ot1, ot2 = "LightGCN (#1, seed 1)", "LightGCNOT (#2, seed 1)", "LightGCNOT (#3, seed 2)"
    assert set(looks) == {base, ot1, ot2}
    assert all(len(v) == 1 for v in looks.values()), looks  # the same colour, marker and style everywhere
    assert len({next(iter(v)) for v in looks.values()}) == 3  # no two runs alike
    # the seeds of one row share colour and marker, told apart by line style
    (c1, m1, s1), (c2, m2, s2) = next(iter(looks[ot1])), next(iter(looks[ot2]))
    assert (c1, m1) == (c2, m2) and s1 != s2 and c1 != next(iter(looks[base]))[0]
    # a run without a term is absent from its panel, never drawn there in another colour
    assert {ln.get_label() for ln in panels["reg"].get_lines()} == {ot1, ot2}
    assert {ln.get_label() for ln in panels["ot"].get_lines()} == {ot1, ot2}
    assert {ln.get_label() for ln in panels["bpr"].get_lines()} == {base, ot1, ot2}
    # one legend, on the figure, naming every run in its own look
    assert all(ax.get_legend() is None for ax in fig.axes)
    (legend,) = fig.legends
    entries = {t.get_text(): h for t, h in zip(legend.get_texts(), legend.legend_handles)}
    assert set(entries) == {base, ot1, ot2}
    for label, handle in entries.items():
        assert (mcolors.to_hex(handle.get_color()), handle.get_marker(), handle.get_linestyle()) in looks[label]


@pytest.fixture
def sweep_db(tmp_path):
    """LightGCN baseline (2 seeds) and an OT sweep over ot_weight 1e-7 .. 0.1 (2 seeds each)."""
    db = tmp_path / "s.db"
    rows = [dict(row="LightGCN", role="baseline", seed=s, metrics={"recall@20": v}) for s, v in ((1, 0.20), (2, 0.22))]
    for w, r in ((1e-7, 0.21), (1e-3, 0.23), (0.1, 0.18)):
        for s, jitter in ((1, -0.005), (2, 0.005)):
            rows.append(dict(row=f"{w:g}ot", variant="ot", seed=s, point={"ot_weight": w},
                             config={"ot_weight": w}, metrics={"recall@20": r + jitter}))
    fill(db, rows, name="quick")
    return db


def test_sweep_log_axis_baseline_line_and_error_bars(sweep_db, tmp_path, figures):
    cli("plot", "quick", "--x", "ot_weight", "--y", "recall@20", "-o", tmp_path / "s.png", "--db", sweep_db)
    (fig,) = figures
    (ax,) = fig.axes
    assert ax.get_xscale() == "log"
    # the baseline: a labelled horizontal line at its mean, and a band of ± one std
    (base,) = [ln for ln in ax.get_lines() if ln.get_label().startswith("LightGCN")]
    assert base.get_label() == "LightGCN (baseline, n=2)"
    assert np.allclose(base.get_ydata(), 0.21)
    std = np.std([0.20, 0.22], ddof=1)
    (band,) = [p for p in ax.patches if p.get_label() == "LightGCN ± std"]
    ys = band.get_path().transformed(band.get_patch_transform()).vertices[:, 1] if isinstance(band, Rectangle) \
        else band.get_xy()[:, 1]
    assert np.isclose(ys.min(), 0.21 - std) and np.isclose(ys.max(), 0.21 + std)
    # the sweep: one line, mean over seeds at each weight, error bars of ± std over seeds
    (cont,) = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert cont.get_label() == "ot (n=2)"
    line = cont.lines[0]
    assert np.allclose(line.get_xdata(), [1e-7, 1e-3, 0.1]) and np.allclose(line.get_ydata(), [0.21, 0.23, 0.18])
    (bars,) = cont.lines[2]
    heights = [seg[1][1] - seg[0][1] for seg in bars.get_segments()]
    assert np.allclose(heights, 2 * np.std([-0.005, 0.005], ddof=1))
    # the baseline row is the reference line, not a point on the sweep
    assert "LightGCN" not in {c.get_label() for c in ax.containers}
    assert {t.get_text() for t in ax.get_legend().get_texts()} == {"ot (n=2)", "LightGCN (baseline, n=2)",
                                                                  "LightGCN ± std"}


def test_sweep_axis_scale_can_be_forced(sweep_db, tmp_path, figures):
    cli("plot", "quick", "--x", "ot_weight", "--linx", "-o", tmp_path / "a.png", "--db", sweep_db)
    cli("plot", "quick", "--x", "ot_weight", "--logx", "--baseline", "1e-07ot", "-o", tmp_path / "b.png",
        "--db", sweep_db)
    assert [f.axes[0].get_xscale() for f in figures] == ["linear", "log"]
    labels = {ln.get_label() for ln in figures[1].axes[0].get_lines()}
    assert "1e-07ot (baseline, n=2)" in labels


@pytest.mark.parametrize("values, scale", [
    ([1e-7, 0.1], "log"), ([1e-7, 1e-3, 0.1], "log"), ([2, 10, 50], None), ([1, 100], "log"),
    ([0.0, 1e-4, 1.0], "symlog"), ([-1.0, 1e-4, 1.0], None), (["a", "b"], None), ([True, False], None), ([5], None),
])
def test_log_scale_is_decided_from_the_values(values, scale):
    assert plot.log_scale(values) == scale


def test_a_second_grid_axis_splits_lines_instead_of_averaging(tmp_path):
    from ablate.report import frame

    db = tmp_path / "g.db"
    rows = [dict(row=f"k1={k1},k2={k2}", variant="ot", seed=1, point={"k1": k1, "k2": k2},
                 metrics={"recall@20": k1 + k2 / 100}) for k1 in (1, 3) for k2 in (2, 10)]
    fill(db, rows)
    pts = plot.sweep_points(frame.load(str(db), ["exp"], with_config=True), "k2", "recall@20")
    got = {(r.hue, r.x): r.mean for r in pts.itertuples()}
    assert got == {("ot, k1=1", 2): 1.02, ("ot, k1=1", 10): 1.1, ("ot, k1=3", 2): 3.02, ("ot, k1=3", 10): 3.1}
    fig = plot.sweep_figure(pts, "k2", "recall@20")
    labels = [c.get_label() for c in fig.axes[0].containers]
    colours = {mcolors.to_hex(c.lines[0].get_color()) for c in fig.axes[0].containers}
    assert labels == ["ot, k1=1", "ot, k1=3"] and len(colours) == 2
