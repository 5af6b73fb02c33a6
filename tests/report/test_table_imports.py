"""What keeps ``ablate table`` on 10,000 runs under a second (measured by bench/table.py):
on a SQLite store a Markdown table imports neither SQLAlchemy, pandas nor scipy."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.report.report_store import fill

HEAVY = ("sqlalchemy", "pandas", "scipy", "matplotlib", "torch")

CODE = """
import json, sys
from ablate.cli import main
sys.argv = ["ablate", "table", "--md", "-m", "recall@10", "--db", sys.argv[1]]
try:
    main()
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "loaded": sorted(m for m in %r if m in sys.modules)}))
""" % (HEAVY,)


def test_markdown_table_on_sqlite_imports_no_heavy_library(tmp_path):
    db = tmp_path / "r.db"
    fill(db, [dict(row=name, role=role, seed=s, metrics={"recall@10": v + 0.001 * s}, losses=[{"bpr": 0.5, "ot": 1e-4}])
              for name, role, v in (("LightGCN", "baseline", 0.18), ("V", "variant", 0.19)) for s in (1, 2, 3)])
    res = subprocess.run([sys.executable, "-c", CODE, str(db)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    table, result = res.stdout.rsplit("\n", 2)[0], json.loads(res.stdout.strip().splitlines()[-1])
    assert result == {"code": 0, "loaded": []}, res.stdout
    assert "| V (n=3) | **0.1920 ± 0.0010**\\*\\* | negligible ot" in table  # a t-test and a flag were computed
