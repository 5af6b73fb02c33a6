"""Datasets without a path in the spec: the data home, ``ablate data fetch`` from a local
``file://`` archive laid out as RecBole's ml-1m.zip, the one-line offline message, and the
NCL paper's ml-1m filter (ratings >= 3) as RecBole itself applies it.

No test touches the network: every URL is a ``file://`` path in the test's folder.
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ablate import data, plan
from ablate.cli import app
from ablate.spec import load_spec

ROOT = Path(__file__).resolve().parent.parent
BASELINES = ROOT / "experiments" / "baselines.yaml"
RECBOLE_ML1M = "https://recbole.s3-accelerate.amazonaws.com/ProcessedDatasets/MovieLens/ml-1m.zip"

# RecBole's ml-1m.inter columns, with ratings chosen so that the filter's effect is known:
# u3 rated nothing >= 3 and i5, i6 were never rated >= 3 (all three leave), 3 is kept.
RAW = [("u1", "i1", 5), ("u1", "i2", 3), ("u1", "i3", 1), ("u2", "i1", 4), ("u2", "i4", 2),
       ("u3", "i5", 2), ("u3", "i2", 1), ("u4", "i3", 3), ("u4", "i4", 4), ("u4", "i6", 1)]
KEPT = [(u, i) for u, i, r in RAW if r >= 3]  # 5 interactions, users u1 u2 u4, items i1..i4

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def write_raw(folder: Path, name: str = "ml-1m") -> Path:
    """RecBole's atomic files of ``name`` (.inter with ratings, .user, .item) in ``folder``,
    flat, as in RecBole's zips; u5 is in .user only, never in .inter."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = "".join(f"{u}\t{i}\t{r}\t{978300000 + n}\n" for n, (u, i, r) in enumerate(RAW))
    (folder / f"{name}.inter").write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n" + rows)
    (folder / f"{name}.user").write_text("user_id:token\tage:token\n" + "".join(f"u{k}\t25\n" for k in range(1, 6)))
    (folder / f"{name}.item").write_text("item_id:token\tgenre:token_seq\n" + "".join(f"i{k}\tDrama\n" for k in range(1, 7)))
    return folder


def make_zip(tmp_path: Path) -> Path:
    """A stand-in for RecBole's ml-1m.zip: ml-1m.inter, .user, .item at the top level."""
    files = write_raw(tmp_path / "zip-src")
    archive = tmp_path / "mirror" / "ml-1m.zip"
    archive.parent.mkdir()
    with zipfile.ZipFile(archive, "w") as z:
        for p in sorted(files.iterdir()):
            z.write(p, p.name)
    return archive


def ml1m_spec(folder: Path, data_path: Path | None = None) -> Path:
    """One LightGCN run on ml-1m with the shipped specs' data settings, no data_path unless given."""
    base = load_spec(BASELINES).base
    lines = ["name: data-test", "base:", "  dataset: ml-1m", "  epochs: 1"]
    lines += [f"  {k}: {base[k]!r}".replace("'", '"') for k in ("load_col", "val_interval", "unused_col")]
    if data_path is not None:
        lines.append(f"  data_path: {data_path}")
    lines += ["seeds: [2020]", "baselines: {LightGCN: {model: LightGCN}}", ""]
    path = folder / "ml1m.yaml"
    path.write_text("\n".join(lines))
    return path


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """An empty data home for this test; no URL override from the caller's environment."""
    folder = tmp_path / "home"
    monkeypatch.setenv("ABLATE_DATA", str(folder))
    monkeypatch.delenv("ABLATE_DATA_URL_ML_1M", raising=False)
    return folder


def test_the_data_home_is_ablate_data_else_the_user_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("ABLATE_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert data.home() == tmp_path / "cache" / "ablate" / "data"
    monkeypatch.setenv("ABLATE_DATA", str(tmp_path / "mine"))
    assert data.home() == tmp_path / "mine"
    result = invoke("data", "where")
    assert result.exit_code == 0 and result.output.startswith(f"{tmp_path / 'mine'}  ($ABLATE_DATA)")


def test_fetch_from_a_local_archive_then_a_spec_without_data_path_finds_it(home, tmp_path):
    archive = make_zip(tmp_path)
    spec = ml1m_spec(tmp_path)
    missing = invoke("run", spec, "--dry-run", "--db", tmp_path / "r.db")
    assert missing.exit_code == 2 and "dataset folder not found" in missing.output

    result = invoke("data", "fetch", "ml-1m", "--url", archive.as_uri())
    assert result.exit_code == 0, result.output
    assert result.stdout == f"ml-1m: fetched into {home / 'ml-1m'}\n"  # tqdm draws on stderr
    assert sorted(p.name for p in home.iterdir()) == ["ml-1m"]  # no archive, no half-unpacked folder left
    assert sorted(p.name for p in (home / "ml-1m").iterdir()) == ["ml-1m.inter", "ml-1m.item", "ml-1m.user"]

    planned = invoke("run", spec, "--dry-run", "--db", tmp_path / "r.db")
    assert planned.exit_code == 0, planned.output
    assert "LightGCN" in planned.output and "1 runs" in planned.output
    [run] = plan.expand(load_spec(spec))
    assert run.config["data_path"] == str(home) and run.config["val_interval"] == {"rating": "[3,inf)"}

    again = invoke("data", "fetch", "ml-1m", "--url", archive.as_uri())
    assert again.exit_code == 0 and "already in" in again.output
    listed = invoke("data", "list")
    assert f"ml-1m\t{home / 'ml-1m'}\t[user_id, item_id, rating, timestamp]" in listed.output


def test_run_fetch_downloads_what_the_plan_misses_from_the_url_setting(home, tmp_path, monkeypatch):
    monkeypatch.setenv("ABLATE_DATA_URL_ML_1M", make_zip(tmp_path).as_uri())
    result = invoke("run", ml1m_spec(tmp_path), "--fetch", "--dry-run", "--db", tmp_path / "r.db")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"fetched {home / 'ml-1m'}\n")
    assert (home / "ml-1m" / "ml-1m.inter").is_file()


def test_offline_fetch_and_a_missing_dataset_say_what_to_put_where_in_one_line(home, tmp_path):
    absent = (tmp_path / "nowhere" / "ml-1m.zip").as_uri()
    result = invoke("data", "fetch", "ml-1m", "--url", absent)
    assert result.exit_code == 2
    line = result.output.strip()
    assert "\n" not in line and line.startswith(f"ablate: error: cannot download ml-1m from {absent} (")
    hint = (f"download {RECBOLE_ML1M} yourself and unzip it into {home / 'ml-1m'}/ "
            f"(so that {home / 'ml-1m' / 'ml-1m.inter'} exists)")
    assert hint in line
    assert not (home / "ml-1m").exists() and list(home.iterdir()) == []

    planned = invoke("run", ml1m_spec(tmp_path), "--dry-run", "--db", tmp_path / "r.db")
    assert planned.exit_code == 2
    line = planned.output.strip()
    assert "\n" not in line and f"dataset folder not found: {home / 'ml-1m'}; `ablate data fetch ml-1m` downloads it" in line
    assert hint in line  # the same advice at plan time, before anything is stored
    assert not (tmp_path / "r.db").exists()


def test_run_fetch_offline_fails_before_anything_is_stored(home, tmp_path, monkeypatch):
    absent = (tmp_path / "nowhere" / "ml-1m.zip").as_uri()
    monkeypatch.setenv("ABLATE_DATA_URL_ML_1M", absent)
    result = invoke("run", ml1m_spec(tmp_path), "--fetch", "--db", tmp_path / "r.db")
    assert result.exit_code == 2 and f"cannot download ml-1m from {absent}" in result.output
    assert f"unzip it into {home / 'ml-1m'}/" in result.output and not (tmp_path / "r.db").exists()


def test_an_archive_that_is_not_recbole_atomic_files_is_refused(home, tmp_path):
    junk = tmp_path / "ml-1m.zip"
    junk.write_text("not a zip")
    result = invoke("data", "fetch", "ml-1m", "--url", junk.as_uri())
    assert result.exit_code == 2 and "is not a zip archive of atomic files" in result.output
    nested = tmp_path / "nested" / "ml-1m.zip"
    nested.parent.mkdir()
    with zipfile.ZipFile(nested, "w") as z:
        z.writestr("data/ratings.csv", "1,2,3\n")
    result = invoke("data", "fetch", "ml-1m", "--url", nested.as_uri())
    assert result.exit_code == 2 and "not ml-1m.inter at its top level" in result.output
    assert list(home.iterdir()) == []
    (home / "ml-1m" / "notes").mkdir(parents=True)  # a folder made by hand is never deleted unasked
    archive = make_zip(tmp_path).as_uri()
    result = invoke("data", "fetch", "ml-1m", "--url", archive)
    assert result.exit_code == 2 and "exists but holds no ml-1m.inter" in result.output
    assert (home / "ml-1m" / "notes").is_dir()
    assert invoke("data", "fetch", "ml-1m", "--url", archive, "--force").exit_code == 0
    assert (home / "ml-1m" / "ml-1m.inter").is_file() and not (home / "ml-1m" / "notes").exists()


def test_the_spec_data_path_wins_over_the_data_home(home, tmp_path):
    write_raw(home / "ml-1m")
    mine = write_raw(tmp_path / "mine" / "ml-1m").parent
    assert plan.expand(load_spec(ml1m_spec(tmp_path, data_path=mine)))[0].config["data_path"] == str(mine)
    assert plan.expand(load_spec(ml1m_spec(tmp_path)))[0].config["data_path"] == str(home)
    empty = tmp_path / "empty"
    empty.mkdir()
    result = invoke("run", ml1m_spec(tmp_path, data_path=empty), "--dry-run", "--db", tmp_path / "r.db")
    assert result.exit_code == 2  # an explicit folder without ml-1m/ is not replaced by the data home
    assert f"dataset folder not found: {empty / 'ml-1m'}; `ablate data fetch ml-1m --data-path {empty}`" in result.output


def _recbole_dataset(config: dict):
    from recbole.config import Config
    from recbole.data import create_dataset

    from ablate import compat

    compat.apply()
    argv, sys.argv = sys.argv, sys.argv[:1]  # Config() reads overrides from sys.argv
    try:
        cfg = Config(model=config["model"], dataset=config["dataset"],
                     config_dict={**config, "state": "ERROR", "show_progress": False, "use_gpu": False})
    finally:
        sys.argv = argv
    return create_dataset(cfg)


def test_the_shipped_ml1m_filter_keeps_ratings_from_3_as_recbole_applies_it(tmp_path):
    """The shipped specs' load_col/val_interval/unused_col on RecBole's raw ml-1m layout, and
    the same spec on a copy filtered beforehand without its rating column (as the NCL-paper
    ml-1m on these machines is), give the same interactions. On the real download this is
    836,478 interactions, 6,040 users and 3,629 items as RecBole counts (padding id included)."""
    raw = write_raw(tmp_path / "raw" / "ml-1m").parent
    pre = tmp_path / "pre" / "ml-1m"
    pre.mkdir(parents=True)
    (pre / "ml-1m.inter").write_text("user_id:token\titem_id:token\n" + "".join(f"{u}\t{i}\n" for u, i in KEPT))

    seen = {}
    for label, folder in (("raw", raw), ("pre", pre.parent)):
        [run] = [r for r in plan.expand(load_spec(BASELINES), {"data_path": str(folder), "epochs": 1})
                 if r.model == "LightGCN"]
        ds = _recbole_dataset(run.config)
        assert (ds.inter_num, ds.user_num, ds.item_num) == (5, 4, 5), label  # 3 users, 4 items + padding
        assert all("rating" not in part.inter_feat.columns for part in ds.build())  # unused_col, once split
        uid, iid = ds.inter_feat[ds.uid_field].numpy(), ds.inter_feat[ds.iid_field].numpy()
        seen[label] = sorted(zip(ds.id2token(ds.uid_field, uid), ds.id2token(ds.iid_field, iid)))
        seen[label + "_key"] = run.key
        seen[label + "_filter"] = run.config["val_interval"], run.config["unused_col"]
    assert seen["raw"] == seen["pre"] == sorted(KEPT)
    assert seen["raw_filter"] == ({"rating": "[3,inf)"}, {"inter": ["rating"]})
    assert seen["pre_filter"] == (None, None)  # no column to filter, none to leave unused
    assert seen["raw_key"] != seen["pre_key"]  # different files, different runs


def test_a_filter_on_a_column_the_file_lacks_and_the_spec_never_loads_is_a_mistake(home, tmp_path):
    """Only a column the spec's load_col names is taken as filtered already; a misspelt
    filter field is refused at plan time, not dropped."""
    write_raw(home / "ml-1m")
    spec = ml1m_spec(tmp_path)
    spec.write_text(spec.read_text().replace('val_interval: {"rating"', 'val_interval: {"ratting"'))
    result = invoke("run", spec, "--dry-run", "--db", tmp_path / "r.db")
    assert result.exit_code == 2, result.output
    assert "val_interval filters on 'ratting', which ml-1m.inter does not have" in result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "r.db").exists()
