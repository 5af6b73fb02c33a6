"""bench/gpu/check.sh runs only where a GPU is lent, for minutes: what it calls and how it
reads the results are checked here, on the CPU, so that the device call spends its time
measuring. The phases themselves run end to end on the CPU with ``DEVICE=cpu bash
bench/gpu/check.sh`` (minutes, not part of the suite)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench.gpu import results

ROOT = Path(__file__).resolve().parents[2]
CHECK = ROOT / "bench" / "gpu" / "check.sh"
REFERENCE = ROOT / "experiments" / "references" / "ncl_paper.yaml"


def fused(runs, models, ratio, *, within=True, device="cuda", dataset="ml-1m", metric=2e-7, loss=3e-6, problems=()):
    return {"runs": runs, "models": models, "dataset": dataset, "epochs": 1, "device": device, "solo_s": 10.0 * ratio,
            "fused_s": 10.0, "ratio": ratio, "tolerance": "gpu" if device == "cuda" else "exact",
            "max_metric_diff": metric, "max_loss_rel_diff": loss, "within_tolerance": within,
            "problems": list(problems), "devices": {"solo": ["cuda:0"], "fused": [f"cuda:0+fused{runs}"]}}


def ot(ratio, mem=(300.0, 140.0), device="cuda", dataset="ml-1m"):
    return {"dataset": dataset, "device": device, "batch_size": 4096, "epochs": 3,
            "LightGCN": {"epoch_s": 2.0, "peak_mb": mem[1]}, "LightGCNOT": {"epoch_s": 2.0 * ratio, "peak_mb": mem[0]}}


def run_row(name, status="done", epochs=80, test=None, dataset="ml-1m", best=(70, 0.25), epoch_s=1.5, error=None):
    return {"name": name, "model": name, "dataset": dataset, "status": status, "epochs": epochs, "max_epochs": 300,
            "best_epoch": best[0], "epoch_s": epoch_s, "best_valid": {"epoch": best[0], "score": best[1]},
            "test": test or {}, "error": error}


def scaled(name, factor, **change):
    """The paper's row for ``name`` times ``factor``, some columns changed."""
    ref, _ = results.load_reference(str(REFERENCE))
    return {**{k: v * factor for k, v in ref[name].items()}, **change}


def test_a_row_within_two_percent_of_the_paper_passes_and_one_outside_fails():
    ref, dataset = results.load_reference(str(REFERENCE))
    assert dataset == "ml-1m" and set(ref) == {"LightGCN", "SGL", "NCL"}
    rows = [run_row("LightGCN", test=scaled("LightGCN", 0.98)),  # -2.0% in every column: at the goal
            run_row("SGL", test=scaled("SGL", 1.0, **{"ndcg@50": ref["SGL"]["ndcg@50"] * 1.03}))]
    table = {t["name"]: t for t in results.paper_rows(rows, ref, dataset)}
    assert table["LightGCN"]["verdict"] == "PASS"
    assert table["LightGCN"]["columns"]["recall@10"]["distance"] == pytest.approx(-0.02)
    assert table["SGL"]["verdict"] == "FAIL" and "+3.0% (ndcg@50)" in table["SGL"]["why"]
    assert table["NCL"]["verdict"] == "NOT MEASURED" and table["NCL"]["why"] == "not run"
    text = results.format_paper_rows(list(table.values()))
    assert "0.1838 (-2.0%)" in text and "paper" in text  # LightGCN's recall@10: 0.1876 x 0.98


def test_a_run_stopped_by_the_time_limit_is_not_measured_and_says_how_far_it_got():
    ref, dataset = results.load_reference(str(REFERENCE))
    rows = [run_row("NCL", status="timeout", epochs=41, best=(39, 0.2611), epoch_s=4.2),
            run_row("LightGCN", epochs=300, test=scaled("LightGCN", 1.0)),
            run_row("SGL", test=scaled("SGL", 1.0), dataset="ml-100k")]
    table = {t["name"]: t for t in results.paper_rows(rows, ref, dataset)}
    assert table["NCL"]["verdict"] == "NOT MEASURED"
    assert "time limit after 41 epochs, 4.20 s/epoch; best valid 0.2611 at epoch 39" in table["NCL"]["why"]
    assert table["LightGCN"]["verdict"] == "PASS" and "all 300 epochs, no early stop" in table["LightGCN"]["why"]
    assert table["SGL"]["verdict"] == "-" and "trained on ml-100k" in table["SGL"]["why"]


def test_the_summary_gives_every_goal_its_figure_and_verdict(tmp_path):
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir(), out.mkdir()
    (work / "steps").write_text("setup 0 14\na4 0 61\na8 0 70\namix 124 90\nb_gsc 0 41\nb_detached 0 35\nc_train 1 250\n")
    (work / "env.txt").write_text("gpu: NVIDIA H200, 143771 MiB, 580.159.04\n")
    (work / "a4.json").write_text(json.dumps(fused(4, ["LightGCN"], 3.21)))
    (work / "a8.json").write_text(json.dumps(fused(8, ["LightGCN"], 4.87, within=False, metric=2e-3)))
    (work / "b_gsc.json").write_text(json.dumps(ot(1.8)))
    (work / "b_detached.json").write_text(json.dumps(ot(1.3)))
    ref, dataset = results.load_reference(str(REFERENCE))
    rows = [run_row("LightGCN", test=scaled("LightGCN", 1.01)), run_row("NCL", status="timeout", epochs=12, best=(10, 0.21))]
    (work / "c.json").write_text(json.dumps({"rows": rows, "table": results.paper_rows(rows, ref, dataset)}))

    assert results.main(["summary", "--work", str(work), "--out", str(out)]) == 0
    goals = {g["id"]: g for g in json.loads((out / "results.json").read_text())["goals"]}
    assert goals["a4"]["verdict"] == "PASS" and goals["a4"]["measured"].startswith("3.21x")
    assert goals["a4_equal"]["verdict"] == "PASS" and "cuda:0+fused4" in goals["a4_equal"]["measured"]
    assert goals["a8"]["verdict"] == "FAIL" and goals["a8_equal"]["verdict"] == "FAIL"
    assert goals["amix"]["verdict"] == "NOT MEASURED" and "time limit after 90 s" in goals["amix"]["note"]
    assert goals["b_gsc"]["verdict"] == "FAIL" and "300 vs 140 MiB (2.14x)" in goals["b_gsc"]["measured"]
    assert goals["b_detached"]["verdict"] == "PASS"  # 1.30x, the goal itself
    assert goals["c_LightGCN"]["verdict"] == "PASS" and goals["c_NCL"]["verdict"] == "NOT MEASURED"
    assert goals["c_SGL"]["note"] == "not run"
    text = (out / "summary.txt").read_text()
    assert text.startswith("gpu: NVIDIA H200")
    assert text.rstrip().endswith("4 PASS, 3 FAIL, 3 NOT MEASURED")


def test_a_failed_set_up_heads_the_summary(tmp_path):
    (tmp_path / "steps").write_text("setup 3 12 the import check failed: setup.txt\n")
    goals, steps = results.summarize(tmp_path)
    text = results.format_summary(goals, steps, ["MISSING: faiss (ModuleNotFoundError)"])
    assert text.splitlines()[:2] == ["MISSING: faiss (ModuleNotFoundError)",
                                     "SET-UP FAILED: nothing was measured (setup.txt names what is missing)"]
    assert {g["verdict"] for g in goals} == {"NOT MEASURED"}


def test_goals_set_for_ml1m_on_a_gpu_get_no_verdict_from_a_cpu_smoke_run(tmp_path):
    (tmp_path / "a4.json").write_text(json.dumps(fused(4, ["LightGCN"], 0.9, device="cpu", dataset="ml-100k")))
    (tmp_path / "b_gsc.json").write_text(json.dumps(ot(0.8, device="cpu", dataset="ml-100k")))
    goals = {g["id"]: g for g in results.summarize(tmp_path)[0]}
    assert goals["a4"]["verdict"] == "-" and goals["b_gsc"]["verdict"] == "-"
    assert goals["a4_equal"]["verdict"] == "PASS"  # equality holds on any device
    assert goals["c"]["verdict"] == "NOT MEASURED" and goals["c"]["note"].startswith("not run")


def test_what_the_fused_bench_writes_is_what_the_summary_reads(tmp_path):
    """bench/fused.py for real (2 ml-100k runs, 1 epoch: ~20 s), its JSON into the summary."""
    subprocess.run([sys.executable, str(ROOT / "bench" / "fused.py"), "--runs", "2", "--epochs", "1",
                    "--embedding-size", "8", "--json", str(tmp_path / "a4.json")], check=True, cwd=tmp_path,
                   capture_output=True, timeout=300)
    goals = {g["id"]: g for g in results.summarize(tmp_path)[0]}
    assert goals["a4"]["verdict"] == "-" and re.match(r"\d+\.\d\dx \(", goals["a4"]["measured"])
    assert goals["a4_equal"]["verdict"] == "PASS", goals["a4_equal"]
    assert "cpu+fused2" in goals["a4_equal"]["measured"]


def test_store_rows_reads_how_each_run_ended(tmp_path):
    from tests.report.report_store import fill

    db = tmp_path / "results.db"
    fill(db, [{"row": "LightGCN", "model": "LightGCN", "metrics": {"recall@10": 0.18, "ndcg@10": 0.25},
               "losses": [{"loss": 0.6}, {"loss": 0.5}, {"loss": 0.45}]},
              {"row": "NCL", "model": "NCL", "status": "timeout", "losses": [{"loss": 0.7}]}], name="ncl_paper")
    rows = {r["name"]: r for r in results.store_rows(str(db), "ncl_paper")}
    assert rows["LightGCN"]["status"] == "done" and rows["LightGCN"]["epochs"] == 3
    assert rows["LightGCN"]["test"] == {"recall@10": 0.18, "ndcg@10": 0.25}
    assert rows["LightGCN"]["best_valid"] == {"epoch": 2, "score": pytest.approx(0.12)}
    assert rows["NCL"]["status"] == "timeout" and rows["NCL"]["test"] == {}
    assert results.store_rows(str(db), "no_such_experiment") == []


def _script_calls() -> list[tuple[list[str], list[str]]]:
    """([script, subcommand], its --options) of every ``$PY bench/...py`` call in check.sh;
    the options of the arrays a call passes (``"${SRC[@]}"``) count as its own."""
    text = CHECK.read_text().replace("\\\n", " ")
    arrays: dict[str, set[str]] = {}
    for m in re.finditer(r"\b([A-Z]+)=\(([^)]*)\)", text):
        arrays.setdefault(m.group(1), set()).update(re.findall(r"(--[a-z][\w-]*)", m.group(2)))
    calls = []
    for m in re.finditer(r'"\$PY" ((?:-m ablate)|(?:bench/[\w/]+\.py))((?: [a-z]+)?)([^\n;|]*)', text):
        options = set(re.findall(r"(--[a-z][\w-]*)", m.group(3)))
        for name in re.findall(r'"\$\{([A-Z]+)\[@\]\}"', m.group(3)):
            options |= arrays[name]
        calls.append(([*m.group(1).split(), *m.group(2).split()], sorted(options)))
    return calls


def test_the_device_script_parses_and_calls_only_options_its_scripts_have():
    subprocess.run(["bash", "-n", str(CHECK)], check=True)
    calls = _script_calls()
    assert {"bench/fused.py", "bench/ot_overhead.py", "bench/gpu/results.py", "-m"} <= {c[0] for c, _ in calls}
    assert any("--device" in o and "--json" in o for c, o in calls if c[0] == "bench/fused.py")
    assert any({"--gpus", "--per-gpu", "--cpu", "--jobs", "--timeout"} <= set(o) for c, o in calls if c[:3] == ["-m", "ablate", "run"])
    for command, options in calls:
        if not options:  # graph_check.py takes none (and --help would run it)
            continue
        script = [str(ROOT / command[0])] if command[0] != "-m" else []
        shown = subprocess.run([sys.executable, *script, *command[(1 if script else 0):], "--help"], capture_output=True,
                               text=True, cwd=ROOT, check=True, env={**os.environ, "COLUMNS": "200"}).stdout
        missing = [o for o in options if not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", shown)]
        assert not missing, f"{' '.join(command)} has no {missing}"


def test_the_device_script_brings_back_at_most_eight_files():
    names = set(re.findall(r'\$OUT/([\w.]+)', CHECK.read_text())) | {"summary.txt", "results.json"}
    assert len(names) <= 8, sorted(names)
