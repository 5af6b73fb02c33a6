"""Per-user significance in real tables: real ml-100k runs (two seeds) through the real CLI,
their per-user values read back from the SQLite file and tested here with scipy and
statsmodels, to be compared with what ``ablate table`` printed.

A deliberately weak variant (a learning rate that barely moves the embeddings) must get
a mark, a config with other key but the same training (``stopping_step`` within two
epochs) none, and the footnote must say which test, correction, alpha and n it used.
"""

from __future__ import annotations

import csv
import io
import sqlite3
from contextlib import closing

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.multitest import multipletests
from typer.testing import CliRunner

from ablate.cli import app
from ablate.peruser import decode

from tests.specs import write_tiny

ROWS = {
    "baselines": {"LightGCN": {"model": "LightGCN"}},
    "variants": {
        "weak": {"model": "LightGCN", "params": {"learning_rate": 1.0e-6}},
        "same": {"model": "LightGCN", "params": {"stopping_step": 3}},
        "layer1": {"model": "LightGCN", "params": {"n_layers": 1}},
    },
}
COLUMNS = ["recall@10", "ndcg@10", "recall@20", "ndcg@20"]


def _invoke(*args):
    res = CliRunner().invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    return res.output


def _rows(db, sql, params=()):
    with closing(sqlite3.connect(db)) as c:
        return c.execute(sql, params).fetchall()


@pytest.fixture(scope="module")
def sig(tmp_path_factory):
    d = tmp_path_factory.mktemp("sig")
    spec = write_tiny(d, "sig", epochs=2, topk=[10, 20], seeds=[2020, 2021], **ROWS)
    db = d / "r.db"
    _invoke("run", spec, "--db", db, "--jobs", "2")
    return db


def _user_vectors(db, row: str, column: str) -> dict[int, np.ndarray]:
    """{user: value averaged over the row's seeds}, straight from the stored bytes."""
    got: dict[int, list[float]] = {}
    for (data,) in _rows(db, "SELECT p.data FROM per_user p JOIN runs r ON r.id = p.run_id "
                             "JOIN experiment_runs m ON m.run_id = r.id WHERE m.row = ? AND p.split = 'test'", (row,)):
        pu = decode(data)
        for u, v in zip(pu.users.tolist(), pu.column(column).astype(np.float64).tolist()):
            got.setdefault(u, []).append(v)
    return {u: float(np.mean(v)) for u, v in got.items()}


def _diffs(db, row: str, column: str) -> np.ndarray:
    a, b = _user_vectors(db, row, column), _user_vectors(db, "LightGCN", column)
    users = sorted(a.keys() & b.keys())
    return np.array([a[u] for u in users]), np.array([b[u] for u in users])


def _csv(db, *flags) -> dict[str, dict[str, str]]:
    out = _invoke("table", "sig", "--db", db, "--csv", "-m", ",".join(COLUMNS), *flags)
    return {r["model"]: r for r in csv.DictReader(io.StringIO(out))}


def test_every_done_run_keeps_per_user_values_and_unrounded_means(sig):
    runs = _rows(sig, "SELECT id FROM runs WHERE status = 'done'")
    assert len(runs) == 8
    for (rid,) in runs:
        for split in ("valid", "test"):
            (data,) = _rows(sig, "SELECT data FROM per_user WHERE run_id = ? AND split = ?", (rid, split))[0]
            pu = decode(data)
            assert len(pu) == 943 and set(pu.columns) == set(COLUMNS)
            stored = dict(_rows(sig, "SELECT name, exact FROM metrics WHERE run_id = ? AND split = ?", (rid, split)))
            rounded = dict(_rows(sig, "SELECT name, value FROM metrics WHERE run_id = ? AND split = ?", (rid, split)))
            for name, mean in pu.means().items():
                assert abs(mean - stored[name]) <= 2e-7  # float32 per user vs RecBole's float64 mean
                assert round(stored[name], 4) == rounded[name]  # RecBole rounded exactly this mean


def test_user_t_and_holm_equal_scipy_and_statsmodels(sig):
    table = _csv(sig, "--test", "user-t")
    cells, raw = [], []
    for row in ("weak", "layer1"):  # "same" trains the same numbers: every difference 0, no test
        for m in COLUMNS:
            a, b = _diffs(sig, row, m)
            p = sps.ttest_rel(a, b).pvalue
            assert float(table[row][f"{m}_p"]) == pytest.approx(p, rel=1e-9, abs=1e-300)
            cells.append((row, m))
            raw.append(p)
    reject, adjusted, _, _ = multipletests(raw, alpha=0.05, method="holm")
    for (row, m), adj in zip(cells, adjusted):
        assert float(table[row][f"{m}_p_adj"]) == pytest.approx(adj, rel=1e-9, abs=1e-300)
    assert all(table["same"][f"{m}_p"] == "" for m in COLUMNS)


def test_wilcoxon_equals_scipy(sig):
    table = _csv(sig, "--test", "wilcoxon", "--correction", "none")
    for m in COLUMNS:
        a, b = _diffs(sig, "layer1", m)
        assert float(table["layer1"][f"{m}_p"]) == pytest.approx(sps.wilcoxon(a - b).pvalue, rel=1e-9, abs=1e-300)
        assert table["layer1"][f"{m}_p"] == table["layer1"][f"{m}_p_adj"]  # no correction


def test_the_weak_variant_is_marked_the_identical_one_is_not(sig):
    md = _invoke("table", "sig", "--db", sig, "--md", "-m", "recall@10,ndcg@10", "--ties")
    lines = {line.split(" | ")[0].strip("| "): line for line in md.splitlines() if line.startswith("|")}
    assert "\\*\\*" in lines["weak (n=2)"] and "≈" not in lines["weak (n=2)"]
    assert "\\*" not in lines["same (n=2)"] and "≈" in lines["same (n=2)"]  # tied with the best (itself the baseline)
    note = ("\\* p≤0.05, \\*\\* p≤0.01 vs the baseline after correction: paired t-test over 943 users (seeds 2020, 2021; "
            "per-user mean over seeds), Holm over 4 comparisons, α=0.05")
    assert note in md
    assert "≈ not significantly different from the column's best row" in md


def test_the_interval_brackets_delta(sig):
    table = _csv(sig, "--ci")
    for m in COLUMNS:
        low, high, delta = (float(table["weak"][f"{m}_{k}"]) for k in ("ci_low", "ci_high", "delta"))
        assert low < high < 0  # far below the baseline, and the interval says so
        a, b = _diffs(sig, "weak", m)
        assert low <= a.sum() / b.sum() - 1 <= high
        assert delta == pytest.approx(a.mean() / b.mean() - 1, abs=5e-6)  # the table's Δ (exact means)


def test_runs_without_per_user_values_are_tested_over_seeds_and_said_so(sig, tmp_path):
    import shutil

    old = tmp_path / "old.db"
    shutil.copy(sig, old)
    with closing(sqlite3.connect(old)) as c:
        c.execute("DELETE FROM per_user WHERE run_id IN (SELECT run_id FROM experiment_runs WHERE row = 'layer1')")
        c.commit()
    md = _invoke("table", "sig", "--db", old, "--md", "-m", "recall@10")
    assert "no per-user values stored for layer1: tested over seeds (paired t-test of the seeds' means)" in md
    table = _csv(old)
    seeds = {}
    for row in ("layer1", "LightGCN"):
        seeds[row] = [v for (v,) in _rows(old, "SELECT x.exact FROM metrics x JOIN runs r ON r.id = x.run_id JOIN "
                                               "experiment_runs m ON m.run_id = r.id WHERE m.row = ? AND x.split = 'test' "
                                               "AND x.name = 'recall@10' ORDER BY r.seed", (row,))]
    p = sps.ttest_rel(seeds["layer1"], seeds["LightGCN"]).pvalue
    assert float(table["layer1"]["recall@10_p"]) == pytest.approx(p, rel=1e-9)


def test_the_latex_table_compiles_with_its_marks_and_footnotes(sig, tmp_path):
    """``--latex`` with every mark (bold, underline, *, **, ≈, Δ with its interval, ≡ and
    † notes as footnotes) compiled by pdflatex with booktabs (ci/latex.sh installs them)."""
    import os
    import shutil
    import subprocess

    if shutil.which("pdflatex") is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("CI=true: pdflatex is missing (ci/latex.sh installs it)")
        pytest.skip("pdflatex is not installed here (ci/latex.sh)")
    ref = tmp_path / "ref.yaml"
    ref.write_text("source: Lin et al., NCL, WWW 2022, Table 2\nsplit: test\nrows:\n  LightGCN_paper: {recall@10: 0.1876}\n")
    tex = _invoke("table", "sig", "--db", sig, "--latex", "--footnotes", "--ties", "--ci", "--reference", ref,
                  "-m", "recall@10,ndcg@10")
    assert r"\approx" in tex and "$^{**}$" in tex and r"\textbf{" in tex and r"\underline{" in tex
    doc = tmp_path / "t.tex"
    doc.write_text("\\documentclass{article}\n\\usepackage[T1]{fontenc}\n\\usepackage[utf8]{inputenc}\n"
                   "\\usepackage{booktabs}\n\\begin{document}\n" + tex + "\\end{document}\n", encoding="utf-8")
    out = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-3000:]
    assert (tmp_path / "t.pdf").stat().st_size > 1000
