"""ablate table from stores filled row by row: marks, ties, seeds, significance, flags, formats."""

from __future__ import annotations

import io
import re

import pandas as pd
import pytest
from scipy import stats as sps
from typer.testing import CliRunner

from ablate.cli import app
from ablate.report import frame, table as tbl

from tests.report.report_store import fill

runner = CliRunner()


def table_of(db, *args):
    res = runner.invoke(app, ["table", "--db", str(db), *args])
    assert res.exit_code == 0, res.output
    return res.output


def md_rows(text):
    """Markdown body as {label: [cells]} (header and rule skipped)."""
    lines = [l for l in text.strip().splitlines()][2:]
    out = {}
    for line in (l for l in lines if l.startswith("|")):  # the table; its footnotes follow it
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        out[cells[0]] = cells[1:]
    return out


def one_seed(rows):
    return [dict(row=name, role=role, metrics={"recall@10": a, "ndcg@10": b}) for name, role, a, b in rows]


def test_best_second_and_ties_in_notebook_style(tmp_path):
    db = tmp_path / "r.db"
    fill(db, one_seed([
        ("LightGCN", "baseline", 0.1876, 0.2514),
        ("wg32a", "variant", 0.18894, 0.2522),   # prints 0.1889: ties with wg32x as shown
        ("wg32x", "variant", 0.18886, 0.2522),
        ("wg02a", "variant", 0.1901, 0.2521),
        ("wobpr", "variant", 0.0078, 0.0120),
    ]))
    out = table_of(db, "--md", "--metrics", "recall@10,ndcg@10")
    lines = out.splitlines()
    assert lines[0] == "| model | recall@10 | ndcg@10 | note |"
    rows = md_rows(out)
    assert rows["LightGCN"][:2] == ["0.1876", "0.2514"]
    assert rows["wg02a"][:2] == ["**0.1901**", "<u>0.2521</u>"]
    # equal as printed -> the same mark; ranks are dense (both second, none third)
    assert rows["wg32a"][:2] == ["<u>0.1889</u>", "**0.2522**"]
    assert rows["wg32x"][:2] == ["<u>0.1889</u>", "**0.2522**"]
    assert rows["wobpr"][:2] == ["0.0078", "0.0120"]
    # identical to the shown precision -> flagged against the first such row
    assert rows["wg32x"][2] == "≡ wg32a"
    assert rows["wg32a"][2] == "" and rows["wg02a"][2] == ""
    # relative change of the best variant vs the baseline: 0.1901/0.1876-1 = +1.3 %
    assert rows["Δ best vs LightGCN"][:2] == ["+1.3%", "+0.3%"]


def test_precision_changes_what_ties(tmp_path):
    db = tmp_path / "r.db"
    fill(db, one_seed([("B", "baseline", 0.18894, 0.3), ("V", "variant", 0.18886, 0.3)]))
    rows = md_rows(table_of(db, "--md", "-m", "recall@10", "--precision", "5"))
    assert rows["B"][0] == "**0.18894**" and rows["V"][0] == "<u>0.18886</u>"
    rows = md_rows(table_of(db, "--md", "-m", "recall@10", "--precision", "3"))
    assert rows["B"][0] == "**0.189**" and rows["V"][0] == "**0.189**"
    assert rows["V"][1] == "≡ B"


def seeded(name, role, values, metric="recall@10", **extra):
    return [dict(row=name, role=role, seed=s, metrics={metric: v}, **extra) for s, v in zip((1, 2, 3, 4), values)]


def test_mean_std_n_and_paired_significance_match_scipy(tmp_path):
    base = [0.180, 0.185, 0.190, 0.182]
    strong = [0.190, 0.1951, 0.2000, 0.1919]   # +0.01 every seed, tiny noise: p < 0.01
    weak = [0.183, 0.190, 0.191, 0.188]        # p between 0.01 and 0.05
    none_ = [0.181, 0.184, 0.192, 0.181]       # p > 0.05
    p_strong, p_weak, p_none = (sps.ttest_rel(v, base).pvalue for v in (strong, weak, none_))
    assert p_strong < 0.01 and 0.01 <= p_weak < 0.05 and p_none >= 0.05
    db = tmp_path / "r.db"
    fill(db, seeded("LightGCN", "baseline", base) + seeded("strong", "variant", strong)
         + seeded("weak", "variant", weak) + seeded("none", "variant", none_))
    store = frame.Store(str(db))
    # the test over seeds alone, uncorrected: scipy's p and its levels
    t = tbl.build(frame.load(store, ["exp"]), ["recall@10"], test="seeds", correction="none")
    cells = {r.name: r.cells["recall@10"] for r in t.rows}
    assert cells["strong"].p == pytest.approx(p_strong) and cells["strong"].sig == "**"
    assert cells["weak"].p == pytest.approx(p_weak) and cells["weak"].sig == "*"
    assert cells["none"].p == pytest.approx(p_none) and cells["none"].sig == ""
    assert cells["LightGCN"].p is None
    # by default (no per-user values stored here: over seeds), Holm over the three rows
    from statsmodels.stats.multitest import multipletests

    t = tbl.build(frame.load(store, ["exp"]), ["recall@10"])
    cells = {r.name: r.cells["recall@10"] for r in t.rows}
    reject, adjusted, _, _ = multipletests([p_strong, p_weak, p_none], alpha=0.05, method="holm")
    for name, adj, rej in zip(("strong", "weak", "none"), adjusted, reject):
        assert cells[name].p_adjusted == pytest.approx(adj) and (cells[name].sig != "") == rej
    assert any("tested over seeds" in n for n in t.test_notes)
    rows = md_rows(table_of(db, "--md", "-m", "recall@10", "--test", "seeds", "--correction", "none"))
    mean, std = pd.Series(strong).mean(), pd.Series(strong).std()
    assert rows["strong (n=4)"][0] == f"**{mean:.4f} ± {std:.4f}**\\*\\*"
    assert rows["weak (n=4)"][0] == f"<u>{pd.Series(weak).mean():.4f} ± {pd.Series(weak).std():.4f}</u>\\*"
    assert rows["LightGCN (n=4)"][0] == f"{pd.Series(base).mean():.4f} ± {pd.Series(base).std():.4f}"


def test_no_test_with_one_seed_or_identical_pairs():
    s = pd.Series([0.1, 0.2], index=[1, 2])
    from ablate.report import stats

    assert stats.paired_p(s, s) is None
    assert stats.paired_p(s.iloc[:1], s.iloc[:1] + 0.1) is None
    assert stats.mark(0.009) == "**" and stats.mark(0.01) == "*" and stats.mark(0.05) == ""


def test_negligible_loss_term_flag(tmp_path):
    db = tmp_path / "r.db"
    fill(db, [
        dict(row="LightGCN", role="baseline", metrics={"recall@10": 0.18}, losses=[{"loss": 0.6}, {"loss": 0.5}]),
        dict(row="ot_tiny", metrics={"recall@10": 0.181},
             losses=[{"bpr": 0.6, "reg": 1e-6, "ot": 0.004}, {"bpr": 0.5, "reg": 1e-6, "ot": 0.0049}]),
        dict(row="ot_big", metrics={"recall@10": 0.182},
             losses=[{"bpr": 0.6, "ot": 0.001}, {"bpr": 0.5, "ot": 0.2}]),  # 40 % in epoch 1
    ])
    rows = md_rows(table_of(db, "--md", "-m", "recall@10"))
    assert rows["ot_tiny"][1] == "negligible ot (<1% of main loss, max 0.98%)"
    assert rows["ot_big"][1] == ""
    rows = md_rows(table_of(db, "--md", "-m", "recall@10", "--negligible", "0.005"))
    assert rows["ot_tiny"] == ["<u>0.1810</u>"]  # above 0.5 %: no flag, so no note column at all
    rows = md_rows(table_of(db, "--md", "-m", "recall@10", "--negligible", "0.5"))
    assert rows["ot_big"][1] == "negligible ot (<50% of main loss, max 40.00%)"


def test_unfinished_rows_show_status_and_never_win(tmp_path):
    db = tmp_path / "r.db"
    fill(db, [
        dict(row="LightGCN", role="baseline", metrics={"recall@10": 0.18}),
        dict(row="crashed", status="failed"),
        dict(row="exploded", status="nan"),
        dict(row="half", seed=1, metrics={"recall@10": 0.17}),
        dict(row="half", seed=2, status="running"),
    ])
    rows = md_rows(table_of(db, "--md", "-m", "recall@10"))
    assert rows["crashed"][0] == "failed" and rows["exploded"][0] == "nan"
    assert rows["LightGCN"][0] == "**0.1800**"
    assert rows["half"] == ["<u>0.1700</u>", "1 running"]


def test_reference_rows_shown_but_not_ranked(tmp_path):
    db = tmp_path / "r.db"
    fill(db, one_seed([("LightGCN", "baseline", 0.18, 0.25), ("V", "variant", 0.19, 0.24)]))
    ref = tmp_path / "paper.yaml"
    ref.write_text("SGL: {recall@10: 0.2500, ndcg@10: 0.3000}\nNCL: {recall@10: 0.2600}\n")
    out = table_of(db, "--md", "-m", "recall@10,ndcg@10", "--reference", str(ref))
    body = out.splitlines()[2:]
    assert body[0] == "| *SGL †* | 0.2500 | 0.3000 |"
    assert body[1] == "| *NCL †* | 0.2600 |  |"
    # the footnote names the file when the file names no source
    assert body[-3:] == ["", "† paper.yaml: published numbers, not run here; never ranked or tested\\",
                         "no per-user values stored for V, and fewer than two seeds shared with the baseline: not tested"]
    rows = md_rows(out)
    assert rows["V"] == ["**0.1900**", "<u>0.2400</u>"] and rows["LightGCN"] == ["<u>0.1800</u>", "**0.2500**"]
    csv_ref = tmp_path / "paper.csv"
    csv_ref.write_text("model,Recall@10\nSGL,0.25\n")
    assert "| *SGL †* | 0.2500 |" in table_of(db, "--md", "-m", "recall@10", "--reference", str(csv_ref))


def test_vs_reference_puts_each_rows_distance_from_its_published_row_in_its_cells(tmp_path):
    db = tmp_path / "r.db"
    fill(db, one_seed([("LightGCN", "baseline", 0.18, 0.25), ("SGL", "variant", 0.2550, 0.2940), ("V", "variant", 0.19, 0.24)]))
    ref = tmp_path / "paper.yaml"
    ref.write_text("SGL: {recall@10: 0.2500, ndcg@10: 0.3000}\nLightGCN: {recall@10: 0.2000}\n")
    out = table_of(db, "--md", "-m", "recall@10,ndcg@10", "--reference", str(ref), "--vs-reference")
    rows = md_rows(out)
    assert rows["SGL"][:2] == ["**0.2550** (+2.0%)", "**0.2940** (-2.0%)"]
    assert rows["LightGCN"][:2] == ["0.1800 (-10.0%)", "<u>0.2500</u>"]  # no published ndcg@10: no distance
    assert rows["V"][:2] == ["<u>0.1900</u>", "0.2400"]  # no published row of its name
    assert "its distance from the † row of the same name" in out
    res = runner.invoke(app, ["table", "--db", str(db), "--vs-reference"])
    assert res.exit_code == 2 and "--vs-reference needs reference rows" in res.output


def _latex_ok(tex: str, ncols: int) -> None:
    depth = 0
    for ch in re.sub(r"\\[{}]", "", tex):
        depth += ch == "{"
        depth -= ch == "}"
        assert depth >= 0
    assert depth == 0
    lines = tex.strip().splitlines()
    assert lines[0].startswith(r"\begin{tabular}{") and lines[-1] == r"\end{tabular}"
    assert lines[1] == r"\toprule" and r"\bottomrule" in lines and r"\midrule" in lines
    after = lines[lines.index(r"\bottomrule") + 1:-1]
    assert all(l.startswith(rf"\multicolumn{{{ncols}}}{{l}}{{\footnotesize ") for l in after)  # footnotes only
    body = [l for l in lines if l.endswith(r"\\")]
    assert body
    for line in body:
        if line.startswith(rf"\multicolumn{{{ncols}}}"):  # a footnote across the table
            continue
        assert len(re.findall(r"(?<!\\)&", line)) == ncols - 1, line


def test_latex_is_well_formed(tmp_path):
    db = tmp_path / "r.db"
    fill(db, seeded("Light_GCN", "baseline", [0.18, 0.19, 0.2]) + seeded("V&1 #x", "variant", [0.2, 0.21, 0.225])
         + [dict(row="failed_one", status="failed")])
    ref = tmp_path / "ref.yaml"
    ref.write_text("- {name: 'SGL 100%', recall@10: 0.3}\n")
    tex = table_of(db, "--latex", "-m", "recall@10", "--reference", str(ref))
    _latex_ok(tex, ncols=2)
    assert r"\textbf{0.2117 $\pm$ 0.0126}" in tex and r"\underline{0.1900 $\pm$ 0.0100}" in tex
    assert r"Light\_GCN (n=3)" in tex and r"V\&1 \#x" in tex and r"\textit{SGL 100\% $^{\dagger}$}" in tex
    fill(db, [dict(row="Light_GCN", role="baseline", seed=9, metrics={"recall@10": 0.18})], name="exp2")
    tex = table_of(db, "exp2", "--latex", "-m", "recall@10,ndcg@10", "--delta")
    _latex_ok(tex, ncols=3)


def test_csv_round_trip(tmp_path):
    db = tmp_path / "r.db"
    base = [0.1812345678901, 0.1923456789012]
    fill(db, seeded("LightGCN", "baseline", base) + seeded("V", "variant", [0.2, 0.2101])
         + [dict(row="dead", status="oom")])
    out = table_of(db, "--csv", "-m", "recall@10", "--delta")
    df = pd.read_csv(io.StringIO(out), keep_default_na=False, na_values=[""])
    assert list(df["model"]) == ["LightGCN", "V", "dead"]
    assert df.loc[0, "recall@10"] == sum(base) / 2  # full precision survives
    assert df.loc[0, "recall@10_std"] == pytest.approx(pd.Series(base).std(), rel=1e-12)
    # every value read back equals the table's own, bit for bit
    store = frame.Store(str(db))
    t = tbl.build(frame.load(store, ["exp"]), ["recall@10"], delta=True)
    pd.testing.assert_frame_equal(df, tbl.to_frame(t).replace({"": float("nan")}).fillna(float("nan")),
                                  check_dtype=False, check_exact=True)
    assert df.loc[1, "recall@10_delta"] == pytest.approx(0.20505 / (sum(base) / 2) - 1, abs=1e-15)
    assert df.loc[2, "status"] == "oom" and pd.isna(df.loc[2, "recall@10"])
    assert list(df["n"]) == [2, 2, 0]


def test_sort_split_and_default_experiment(tmp_path):
    db = tmp_path / "r.db"
    fill(db, [dict(row="B", role="baseline", metrics={"recall@10": 0.1}, valid={"recall@10": 0.3}),
              dict(row="V1", metrics={"recall@10": 0.3}, valid={"recall@10": 0.1}),
              dict(row="V2", metrics={"recall@10": 0.2}, valid={"recall@10": 0.2})], name="old")
    fill(db, one_seed([("X", "baseline", 0.5, 0.5)]), name="new")
    with frame.Store(str(db)).session() as s:  # make "old" the most recently updated
        from ablate.store import Experiment

        s.query(Experiment).filter_by(name="old").one().updated_at = pd.Timestamp("2100-01-01").to_pydatetime()
    assert list(md_rows(table_of(db, "--md", "-m", "recall@10"))) == ["B", "V1", "V2", "Δ best vs B"]
    assert list(md_rows(table_of(db, "old", "--md", "-m", "recall@10", "--sort", "recall@10"))) == ["V1", "V2", "B", "Δ best vs B"]
    rows = md_rows(table_of(db, "old", "--md", "-m", "recall@10", "--split", "valid"))
    assert rows["B"][0] == "**0.3000**"
    assert "| X |" in table_of(db, "new", "--md", "-m", "recall@10")


def test_rich_output_has_every_row(tmp_path):
    db = tmp_path / "r.db"
    fill(db, one_seed([("LightGCN", "baseline", 0.18, 0.25), ("V", "variant", 0.19, 0.24)]))
    out = table_of(db, "-m", "recall@10")
    assert "LightGCN" in out and "0.1900" in out and "+5.6%" in out


@pytest.mark.parametrize("args, message", [
    (["table", "nope"], "no experiment named 'nope'"),
    (["table", "--baseline", "Nope"], "--baseline 'Nope' is not a row"),
    (["table", "-m", "hit@5"], "none of the metrics hit@5 was recorded"),
    (["table", "--md", "--latex"], "choose one of --md, --latex, --csv"),
    (["table", "--reference", "missing.yaml"], "--reference missing.yaml: no such file"),
    (["show", "99"], "no run with id 99"),
    (["log", "99"], "no run with id 99"),
    (["rerun", "99"], "no run with id 99"),
    (["rerun"], "give either a run id or --failed SPEC"),
    (["plot", "--curves", "99"], "no run with id 99"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, args, message):
    db = tmp_path / "r.db"
    fill(db, one_seed([("LightGCN", "baseline", 0.18, 0.25)]))
    res = runner.invoke(app, [*args, "--db", str(db)])
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ablate: error: ") and message in lines[0], res.output


def test_missing_store_is_not_created(tmp_path):
    res = runner.invoke(app, ["table", "--db", str(tmp_path / "none.db")])
    assert res.exit_code == 2 and "no results store" in res.output
    assert not (tmp_path / "none.db").exists()
