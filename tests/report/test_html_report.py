"""``ablate report``: one self-contained page, checked in its source and in a real browser.

The store is filled with stored rows (a baseline and an OT sweep over two weights, two
seeds each, a failed run, code versions) so the page has every part; the browser test
opens it in headless Chromium through selenium and asserts what was rendered (marks,
drawn SVG, sorting by a click, no console error) and takes a screenshot. Without
Chromium the browser test is skipped with the reason, except under ``CI=true``, where
ci/browser.sh installs it and a skip would hide a page nobody opened: it fails instead
(``tests/gates.py``).
"""

from __future__ import annotations

import re
import shutil
import sqlite3
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ablate.cli import app

from tests.report.report_store import fill

runner = CliRunner()
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
ERROR = "CUDA out of memory <script>alert(1)</script>"


def cli(*args) -> str:
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    return res.output


@pytest.fixture
def page(tmp_path) -> dict:
    db = tmp_path / "r.db"
    rows = [dict(row="LightGCN", role="baseline", seed=s, config={"n_layers": 2},
                 metrics={"recall@20": r, "ndcg@20": n}, losses=[{"bpr": 0.69}, {"bpr": 0.52}])
            for s, r, n in ((1, 0.200, 0.100), (2, 0.204, 0.104))]
    for w, r, n in ((1e-7, 0.210, 0.110), (0.1, 0.150, 0.060)):
        for s, d in ((1, -0.001), (2, 0.001)):
            rows.append(dict(row=f"{w:g}ot", variant="ot", seed=s, model="LightGCNOT", point={"ot_weight": w},
                             config={"n_layers": 2, "ot_weight": w}, metrics={"recall@20": r + d, "ndcg@20": n + d},
                             losses=[{"bpr": 0.7, "reg": 0.01, "ot": 0.3}, {"bpr": 0.6, "reg": 0.01, "ot": 0.2}]))
    rows.append(dict(row="0.1ot", variant="ot", seed=3, model="LightGCNOT", point={"ot_weight": 0.1},
                     config={"ot_weight": 0.1}, status="failed"))
    fill(db, rows, name="quick")
    with sqlite3.connect(db) as con:
        con.execute("UPDATE runs SET git_commit = 'abc123def4567', versions = ? WHERE status = 'done'",
                    ('{"recbole": "1.2.1", "implementation": "LightGCN@1+ablate@1"}',))
        con.execute("UPDATE runs SET error = ? WHERE status = 'failed'", (ERROR,))
    ref = tmp_path / "ref.yaml"
    ref.write_text("source: NCL paper, Table 2\nsplit: test\nrows:\n  LightGCN: {recall@20: 0.2, ndcg@20: 0.1}\n")
    out = tmp_path / "report.html"
    args = ["quick", "-m", "recall@20,ndcg@20", "--reference", ref, "--db", db]
    said = cli("report", *args, "-o", out)
    assert said.strip() == f"wrote {out}"
    return {"db": db, "html": out.read_text(encoding="utf-8"), "path": out, "md": cli("table", *args, "--md")}


class Tags(HTMLParser):
    """Every start tag with its attributes, and the text inside each tag of interest."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.open: list[tuple[str, dict, list]] = []
        self.texts: list[tuple[str, dict, str]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in ("br", "meta", "img", "input", "path", "use", "rect", "line", "circle", "polyline"):
            self.open.append((tag, dict(attrs), []))

    def handle_data(self, data):
        for _, _, buf in self.open:
            buf.append(data)

    def handle_endtag(self, tag):
        for i in range(len(self.open) - 1, -1, -1):
            if self.open[i][0] == tag:
                t, a, buf = self.open.pop(i)
                self.texts.append((t, a, "".join(buf)))
                break


def parse(html: str) -> Tags:
    p = Tags()
    p.feed(html)
    return p


def md_marks(md: str) -> set[tuple[str, str]]:
    """(rank, text) of the marked cells of a Markdown table."""
    return {("best", t) for t in re.findall(r"\*\*(.+?)\*\*", md)} | {("second", t) for t in re.findall(r"<u>(.+?)</u>", md)}


def test_page_has_the_tables_marks_and_every_part(page):
    html, tags = page["html"], parse(page["html"])
    texts = tags.texts
    # the same marks as --md, from the same Table (bold best, underlined second)
    got = {("best", t) for tag, _, t in texts if tag == "strong" and "±" in t} | \
          {("second", t) for tag, _, t in texts if tag == "u" and "±" in t}
    assert got == md_marks(page["md"]) and len(got) == 4
    assert "0.2100 ± 0.0014" in {t for _, t in got}  # 1e-07ot is best in recall@20
    sig = [t for tag, a, t in texts if tag == "span" and a.get("class") == "sig"]
    assert sig.count("**") + sig.count("*") >= 2  # the t-tests against the baseline, as in --md
    assert page["md"].count("\\*") >= 2
    reference = [t for tag, a, t in texts if tag == "tr" and a.get("class") == "reference"]
    assert len(reference) == 1 and "LightGCN †" in reference[0]
    assert "NCL paper, Table 2" in html
    summary = [t for tag, a, t in texts if tag == "tr" and a.get("class") == "summary"]
    assert len(summary) == 1 and "Δ best vs LightGCN" in summary[0] and "+4.0%" in summary[0]
    # a row's name leads to its section: runs, config against the baseline, curves
    ids = {a["id"] for _, a in tags.tags if "id" in a}
    links = [a["href"] for tag, a in tags.tags if tag == "a" and a.get("href", "").startswith("#row-")]
    assert len(links) == 3 and all(h[1:] in ids for h in links)
    section = html[html.index('<section id="row-1"'):html.index("</section>", html.index('<section id="row-1"'))]
    assert "1e-07ot" in section and "<code>ot_weight</code>" in section and "1e-07" in section
    assert "LightGCN (run 1, seed 1)" in section and "<svg" in section
    # figures: one along the grid axis, the overview, one per row with epochs
    assert [a.get("data-axis") for tag, a in tags.tags if tag == "div" and "sweep" in a.get("class", "")] == ["ot_weight"]
    assert html.count("<svg") == 1 + 1 + 3
    # status counts, the failed run with its error (escaped), the code the runs came from
    counts = next(t for tag, a, t in texts if a.get("id") == "status-counts")
    assert " ".join(counts.split()) == "7 runs: 6 done, 1 failed"
    assert "CUDA out of memory &lt;script&gt;alert(1)&lt;/script&gt;" in html and ERROR not in html
    failed = [a["href"] for tag, a in tags.tags if tag == "a" and a.get("href", "").startswith("#run-")]
    assert failed == ["#run-7"] and "run-7" in ids  # to the failed run's line in its row
    prov = next(t for tag, a, t in texts if tag == "table" and a.get("class") == "provenance")
    assert "abc123def4567" in prov and "recbole=1.2.1" in prov and "implementation=LightGCN@1+ablate@1" in prov


def test_page_needs_nothing_from_the_network(page):
    tags = parse(page["html"]).tags
    assert not [t for t, _ in tags if t in ("link", "iframe", "img", "object", "embed")]
    assert all("src" not in a for t, a in tags if t == "script")
    urls = [v for _, a in tags for k, v in a.items() if k in ("href", "src", "xlink:href") and v]
    assert all(u.startswith("#") for u in urls), urls
    assert not re.search(r"url\((?!#)|@import", page["html"])


def test_report_errors_are_one_line(page, tmp_path):
    res = runner.invoke(app, ["report", "nope", "--db", str(page["db"]), "-o", str(tmp_path / "x.html")])
    assert res.exit_code == 2 and res.output.startswith("ablate: error: no experiment named 'nope'")
    res = runner.invoke(app, ["report", "quick", "--db", str(page["db"]), "-o", str(tmp_path / "no" / "x.html")])
    assert res.exit_code == 2 and "does not exist" in res.output


# ---------------------------------------------------------------------------- in a browser


def _browser():
    reason = None
    try:
        import selenium  # noqa: F401
    except ImportError:
        reason = "selenium is not installed (pip install -e .[test])"
    if reason is None and not (CHROMIUM and CHROMEDRIVER):
        reason = "chromium and chromedriver are not installed (bash ci/browser.sh)"
    if reason is not None:
        pytest.skip(reason)  # under CI=true a failure (tests/gates.py)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1600"):
        opts.add_argument(arg)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


def test_report_in_a_real_browser(page, tmp_path):
    from selenium.webdriver.common.by import By

    driver = _browser()
    try:
        driver.get(Path(page["path"]).resolve().as_uri())
        assert driver.title == "ablate report: quick"
        table = driver.find_element(By.ID, "results")
        bold = [e for e in table.find_elements(By.CSS_SELECTOR, "tbody strong")]
        under = [e for e in table.find_elements(By.CSS_SELECTOR, "tbody u")]
        assert {("best", e.text) for e in bold} | {("second", e.text) for e in under} == md_marks(page["md"])
        assert all(int(e.value_of_css_property("font-weight")) >= 700 for e in bold)
        assert all("underline" in e.value_of_css_property("text-decoration-line") for e in under)
        # the figures were drawn: each inline SVG has a size on the page and paths in it
        figures = driver.find_elements(By.CSS_SELECTOR, ".figure svg")
        assert len(figures) == 5
        for svg in figures:
            assert svg.size["width"] > 300 and svg.size["height"] > 150
            assert len(svg.find_elements(By.CSS_SELECTOR, "path")) > 10
        # sorting: a click on a header orders the ranked rows by that column, again reverses
        def names():
            return [r.get_attribute("data-name") for r in table.find_elements(By.CSS_SELECTOR, "tbody.ranked tr")]

        assert names() == ["LightGCN (n=2)", "1e-07ot (n=2)", "0.1ot (n=2)"]
        header = table.find_element(By.XPATH, ".//thead/tr/th[normalize-space()='recall@20']")
        header.click()
        assert names() == ["0.1ot (n=2)", "LightGCN (n=2)", "1e-07ot (n=2)"]
        assert header.get_attribute("aria-sort") == "ascending"
        header.click()
        assert names() == ["1e-07ot (n=2)", "LightGCN (n=2)", "0.1ot (n=2)"]
        # the reference row stays on top and the summary below, whatever the order
        assert "LightGCN †" in table.find_element(By.CSS_SELECTOR, "tbody.reference tr").text
        assert "Δ best vs" in table.find_element(By.CSS_SELECTOR, "tfoot tr").text
        # a name leads to its runs
        table.find_element(By.LINK_TEXT, "0.1ot (n=2)").click()
        assert driver.current_url.endswith("#row-2")
        top, seen, scrolled = driver.execute_script(
            "var r = document.getElementById('row-2').getBoundingClientRect();"
            "return [r.top, window.innerHeight, window.scrollY];")
        assert 0 <= top < seen and scrolled > 0  # the page moved to the row's runs
        # no console error, and the console is really read (a probe error shows up)
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
        driver.execute_script("console.error('probe')")
        assert any("probe" in e["message"] for e in driver.get_log("browser"))
        shot = tmp_path / "report.png"
        driver.save_screenshot(str(shot))
        from PIL import Image

        with Image.open(shot) as im:
            assert im.size[0] >= 1000 and len(im.getcolors(1 << 20) or range(1 << 20)) > 50  # not a blank page
    finally:
        driver.quit()


@pytest.mark.slow
def test_report_of_real_runs(real_db, tmp_path):
    """Runs trained for real (2 rows x 2 seeds on ml-100k): the page's marks are --md's,
    each row shows its curves and what differs from the baseline, and the versions the
    worker recorded are on the page."""
    db, spec = real_db["db"], real_db["spec"]
    out = tmp_path / "real.html"
    cli("report", spec, "--db", db, "-o", out)
    html = out.read_text(encoding="utf-8")
    texts = parse(html).texts
    got = {("best", t) for tag, _, t in texts if tag == "strong" and "±" in t} | \
          {("second", t) for tag, _, t in texts if tag == "u" and "±" in t}
    assert got and got == md_marks(cli("table", spec, "--db", db, "--md"))
    counts = next(t for tag, a, t in texts if a.get("id") == "status-counts")
    assert " ".join(counts.split()) == "4 runs: 4 done"
    l1 = html[html.index('<section id="row-1"'):html.index("</section>", html.index('<section id="row-1"'))]
    assert "<h3>L1</h3>" in l1 and "<code>n_layers</code></td><td class=\"text\">1</td><td class=\"text\">2</td>" in l1
    assert l1.count("<svg") == 1 and "valid_score" in l1
    prov = next(t for tag, a, t in texts if tag == "table" and a.get("class") == "provenance")
    assert "recbole=1.2.1" in prov and sorted(re.findall(r"#(\d+)", prov)) == ["1", "2", "3", "4"]
    # the test and the intervals, as --md --ci says them
    notes = [t for tag, a, t in texts if tag == "p" and "test-note" in (a.get("class") or "")]
    md = cli("table", spec, "--db", db, "--md", "--ci")
    assert notes and all(n in md.replace("\\", "") for n in notes), (notes, md)
    assert any("paired t-test over 943 users (seeds 2020, 2021" in n for n in notes)
    assert any("95% CI of Δ: paired bootstrap over users, 10,000 resamples" in n for n in notes)
    deltas = [t for tag, a, t in texts if tag == "span" and a.get("class") == "delta"]
    assert deltas and all(re.fullmatch(r"\([+-]\d+\.\d%\s\[[+-]\d+\.\d, [+-]\d+\.\d\]\)", d) for d in deltas), deltas
