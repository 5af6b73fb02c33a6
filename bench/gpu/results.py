"""What bench/gpu/check.sh measured, goal by goal: the figure, and PASS, FAIL or NOT
MEASURED with the reason (the step's exit code, its time limit, the budget).

    python bench/gpu/results.py ncl --db DB --reference REF [--experiment ncl_paper] [--json PATH]
    python bench/gpu/results.py summary --work WORK --out OUT

``ncl`` prints each row of the NCL-paper spec next to the paper's numbers, with its
distance from them (ours / paper - 1) per column, and how the run ended (early stop,
the epoch cap, or the time limit, with the best valid score it had reached).
``summary`` reads the steps' JSON files and exit codes from WORK (what check.sh left
there) and writes OUT/summary.txt and OUT/results.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# The goals (issue-level targets); the figures are compared with them as printed.
FUSED_GOALS = {4: 3.0, 8: 5.0}  # throughput, --fuse N vs --fuse off, N ml-1m LightGCN runs on one GPU
OT_GOAL = 1.3  # LightGCNOT epoch / LightGCN epoch on ml-1m
PAPER_GOAL = 0.02  # |ours / paper - 1| in every column of the NCL paper's rows
COLUMNS = ["recall@10", "ndcg@10", "recall@20", "ndcg@20", "recall@50", "ndcg@50"]


# ---------------------------------------------------------------------------- the NCL paper's rows


def store_rows(db: str, experiment: str) -> list[dict]:
    """The runs of ``experiment`` in ``db`` as plain dicts (what :func:`paper_rows` reads)."""
    from ablate.store import Store

    store = Store(db, create=False)
    exp = store.experiment(experiment)
    if exp is None:
        return []
    rows = []
    for r in store.runs(store.experiment_run_ids(exp.id)):
        epochs = [e for e in r.epochs]
        scored = [e for e in epochs if e.valid_score is not None]
        best = max(scored, key=lambda e: e.valid_score) if scored else None
        seconds = [e.train_seconds for e in epochs if e.train_seconds is not None]
        rows.append({
            "name": r.name, "model": r.model, "dataset": r.dataset, "status": str(getattr(r.status, "value", r.status)),
            "epochs": len(epochs), "max_epochs": (r.config or {}).get("epochs"),
            "stopping_step": (r.config or {}).get("stopping_step"), "best_epoch": r.best_epoch,
            "epoch_s": sum(seconds) / len(seconds) if seconds else None, "wall_s": r.wall_seconds,
            "peak_mem_mb": r.peak_mem_mb, "device": r.device,
            "best_valid": None if best is None else {"epoch": best.epoch, "score": best.valid_score},
            "test": {x.name: x.value for x in r.metrics if x.split == "test"},
            "error": (r.error or "").strip().splitlines()[-1][:300] if r.error else None,
        })
    return rows


def load_reference(path: str) -> tuple[dict[str, dict[str, float]], str | None]:
    """The reference file's rows (name -> metric -> value) and its dataset."""
    import yaml

    data = yaml.safe_load(Path(path).read_text())
    rows = {name: {k.lower(): float(v) for k, v in values.items()} for name, values in data["rows"].items()}
    return rows, data.get("dataset")


def how_it_ended(row: dict) -> str:
    """One line: early stop, the epoch cap, the time limit, or the error."""
    n, cap = row["epochs"], row.get("max_epochs")
    speed = f", {row['epoch_s']:.2f} s/epoch" if row.get("epoch_s") else ""
    best = row.get("best_valid")
    best_txt = f"; best valid {best['score']:.4f} at epoch {best['epoch']}" if best else ""
    if row["status"] == "done":
        if cap is not None and n < cap:
            return f"early stop after {n} epochs (best epoch {row.get('best_epoch')}){speed}"
        return f"all {n} epochs, no early stop (best epoch {row.get('best_epoch')}){speed}"
    if row["status"] == "timeout":
        return f"stopped by the time limit after {n} epochs{speed}{best_txt}"
    return f"{row['status']} after {n} epochs{speed}{best_txt}" + (f": {row['error']}" if row.get("error") else "")


def paper_rows(rows: list[dict], reference: dict[str, dict[str, float]], dataset: str | None = None) -> list[dict]:
    """Each reference row with ours beside it: per column the paper's value, ours, and
    the distance ours / paper - 1; the verdict of the row against :data:`PAPER_GOAL`
    (only for a run on the reference's ``dataset``: the CPU smoke test trains ml-100k)."""
    ours = {r["name"]: r for r in rows}
    out = []
    for name, paper in reference.items():
        row = ours.get(name)
        cols = {}
        for col in [c for c in COLUMNS if c in paper] + [c for c in paper if c not in COLUMNS]:
            mine = (row or {}).get("test", {}).get(col)
            cols[col] = {"paper": paper[col], "ours": mine,
                         "distance": None if mine is None else mine / paper[col] - 1}
        if row is None:
            verdict, why = "NOT MEASURED", "not run"
        elif dataset and row.get("dataset") != dataset:
            verdict, why = "-", f"trained on {row.get('dataset')}, the paper's rows are {dataset}: {how_it_ended(row)}"
        elif row["status"] != "done" or any(c["ours"] is None for c in cols.values()):
            verdict, why = "NOT MEASURED", how_it_ended(row)
        else:
            far = max(cols.items(), key=lambda kv: abs(kv[1]["distance"]))
            ok = abs(far[1]["distance"]) <= PAPER_GOAL + 1e-12
            verdict = "PASS" if ok else "FAIL"
            why = f"{how_it_ended(row)}; largest distance {far[1]['distance']:+.1%} ({far[0]})"
        out.append({"name": name, "verdict": verdict, "why": why, "columns": cols, "run": row})
    return out


def format_paper_rows(table: list[dict]) -> str:
    cols = []
    for t in table:
        cols += [c for c in t["columns"] if c not in cols]
    head = f"{'row':10s} {'':6s}" + "".join(f"{c:>17s}" for c in cols)
    lines = [head, "-" * len(head)]
    for t in table:
        paper = "".join(f"{t['columns'][c]['paper']:17.4f}" if c in t["columns"] else f"{'':17s}" for c in cols)
        ours = ""
        for c in cols:
            cell = t["columns"].get(c)
            if cell is None or cell["ours"] is None:
                ours += f"{'-':>17s}"
            else:
                ours += f"{cell['ours']:9.4f} ({cell['distance']:+5.1%})"
        lines += [f"{t['name']:10s} {'paper':6s}{paper}", f"{'':10s} {'ours':6s}{ours}",
                  f"{'':10s} {t['verdict']}: {t['why']}"]
    lines.append(f"(distance: ours / paper - 1; goal: within {PAPER_GOAL:.0%} in every column)")
    return "\n".join(lines)


def cmd_ncl(args) -> int:
    rows = store_rows(args.db, args.experiment) if Path(args.db).exists() else []
    table = paper_rows(rows, *load_reference(args.reference))
    print(format_paper_rows(table))
    for r in rows:
        if r["name"] not in {t["name"] for t in table}:
            print(f"{r['name']}: {how_it_ended(r)} (no reference row)")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "table": table}, indent=2, default=str))
    return 0


# ---------------------------------------------------------------------------- the summary


def read_steps(work: Path) -> dict[str, dict]:
    """check.sh's step records: lines ``STEP RC SECONDS [NOTE...]`` in WORK/steps."""
    steps = {}
    path = work / "steps"
    if path.exists():
        for line in path.read_text().splitlines():
            parts = line.split(maxsplit=3)
            if len(parts) >= 3:
                steps[parts[0]] = {"rc": parts[1], "seconds": float(parts[2]), "note": parts[3] if len(parts) > 3 else ""}
    return steps


def not_measured(step: dict | None) -> str:
    """Why a step left no figures."""
    if step is None:
        return "not run (phase not selected, or the script stopped before it)"
    rc, note = step["rc"], step["note"]
    if rc == "skipped":
        return f"skipped: {note}" if note else "skipped"
    if rc in ("124", "137"):
        return f"stopped at its time limit after {step['seconds']:.0f} s"
    return f"exit code {rc} after {step['seconds']:.0f} s" + (f" ({note})" if note else "") + "; see its output file"


def _load(work: Path, name: str) -> dict | None:
    path = work / f"{name}.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def goal(results: list[dict], gid: str, what: str, target: str, measured: str | None, verdict: str, note: str = "") -> None:
    results.append({"id": gid, "goal": what, "target": target, "measured": measured, "verdict": verdict, "note": note})


def fused_goals(work: Path, steps: dict, goals: list[dict]) -> None:
    for step, label in (("a4", "4"), ("a8", "8"), ("amix", "mixed")):
        data = _load(work, step)
        if data is None:
            what = f"{label} LightGCN runs, --fuse {label} vs --fuse off" if label != "mixed" else \
                "mixed group (LightGCN + LightGCNOT), --fuse 4 vs --fuse off"
            goal(goals, step, what, "", None, "NOT MEASURED", not_measured(steps.get(step)))
            continue
        models = "+".join(data["models"])
        what = f"{data['runs']} {models} runs on {data['dataset']}, {data['epochs']} epoch(s), --fuse {data['runs']} vs --fuse off"
        target = FUSED_GOALS.get(data["runs"]) if data["models"] == ["LightGCN"] else None
        ratio = data["ratio"]
        figure = f"{ratio:.2f}x ({data['solo_s']:.1f} s vs {data['fused_s']:.1f} s)"
        if target is None:
            goal(goals, step, what + ": throughput", "", figure, "-")
        elif not on_the_goal_setting(data):
            goal(goals, step, what + ": throughput", f">= {target:g}x", figure, "-", GOAL_SETTING)
        else:
            goal(goals, step, what + ": throughput", f">= {target:g}x",
                 f"{ratio:.2f}x ({data['solo_s']:.1f} s vs {data['fused_s']:.1f} s)",
                 "PASS" if round(ratio, 2) >= target else "FAIL")
        tol = ("metrics within 1e-3, loss terms within 1e-4 relative" if data["tolerance"] == "gpu"
               else "equal exactly (RecBole's LightGCN on CPU threads: shown only)")
        fused_devices = sorted(set(data.get("devices", {}).get("fused", [])))
        goal(goals, step + "_equal", what + ": each member vs its solo run", tol,
             f"largest metric difference {data['max_metric_diff']:.3g}, loss term {data['max_loss_rel_diff']:.3g} relative"
             + (f"; fused runs on {', '.join(fused_devices)}" if fused_devices else ""),
             "PASS" if data["within_tolerance"] else "FAIL", "; ".join(data.get("problems", [])))


GOAL_SETTING = "the goal is for ml-1m on a GPU: no verdict here"


def on_the_goal_setting(data: dict) -> bool:
    return str(data.get("device", "")).startswith("cuda") and data.get("dataset") == "ml-1m"


def ot_goals(work: Path, steps: dict, goals: list[dict]) -> None:
    for step, label in (("b_gsc", "the defaults (GSC's gradient through the plans)"),
                        ("b_detached", "ot_detach_plan: true"),
                        ("torch", "ot_detach_plan: true, PyTorch's plans instead of the Triton kernels"),
                        ("compile", "ot_detach_plan: true, ot_compile: true")):
        data = _load(work, step)
        if step in ("torch", "compile") and step not in steps:  # opt-in phases
            continue
        what = f"LightGCNOT / LightGCN epoch, {label}"
        where = f"{data['dataset']}, batch {data['batch_size']}, " if data else ""
        if data is None:
            goal(goals, step, what, f"<= {OT_GOAL:g}x", None, "NOT MEASURED", not_measured(steps.get(step)))
            continue
        base, ot = data["LightGCN"], data["LightGCNOT"]
        ratio = ot["epoch_s"] / base["epoch_s"]
        mem = ot["peak_mb"] / max(base["peak_mb"], 1e-9)
        goal(goals, step, f"LightGCNOT / LightGCN epoch on {where}{label}", f"<= {OT_GOAL:g}x",
             f"{ratio:.2f}x ({ot['epoch_s']:.3f} s vs {base['epoch_s']:.3f} s); peak memory {ot['peak_mb']:.0f} vs "
             f"{base['peak_mb']:.0f} MiB ({mem:.2f}x)",
             ("PASS" if round(ratio, 2) <= OT_GOAL else "FAIL") if on_the_goal_setting(data) else "-",
             "" if on_the_goal_setting(data) else GOAL_SETTING)
    for step in ("torch", "compile"):  # figures to set beside b_detached's, not goals of their own
        for g in goals:
            if g["id"] == step and g["verdict"] in ("PASS", "FAIL"):
                g["verdict"], g["target"], g["note"] = "-", "", "beside the detached epoch with the Triton plans"


def ncl_goals(work: Path, steps: dict, goals: list[dict]) -> None:
    data = _load(work, "c")
    if data is None:
        goal(goals, "c", "NCL paper's ml-1m rows", f"within {PAPER_GOAL:.0%}", None, "NOT MEASURED",
             not_measured(steps.get("c_train")))
        return
    for t in data["table"]:
        cells = [f"{c} {v['ours']:.4f} ({v['distance']:+.1%})" for c, v in t["columns"].items() if v["ours"] is not None]
        goal(goals, f"c_{t['name']}", f"{t['name']} vs the NCL paper's row", f"within {PAPER_GOAL:.0%} in every column",
             ", ".join(cells) or None, t["verdict"], t["why"])


EXTRAS = {"graph": "CUDA-graphed steps equal eager (graph_check.py)", "ops": "kernels per step (ot_ops.py)",
          "host": "RecBole's epoch vs the fast path (epoch_host.py)", "pack": "packing, --per-gpu 1 vs 4 vs 4 --mps (sweep.sh)"}


def extra_goals(work: Path, steps: dict, goals: list[dict]) -> None:
    """The opt-in phases: no goal parsed here, their last lines and exit code."""
    for name, what in EXTRAS.items():
        if name not in steps:
            continue
        log = work / f"extra_{name}.log"
        tail = [line for line in (log.read_text(errors="replace").splitlines() if log.exists() else [])
                if line.strip() and not line.startswith(("{", "== "))]
        step = steps[name]
        verdict = "-" if step["rc"] == "0" else "NOT MEASURED"
        goal(goals, name, what, "see extra.txt", " | ".join(tail[-5:]) or None, verdict,
             "" if step["rc"] == "0" else not_measured(step))


def summarize(work: Path) -> tuple[list[dict], dict]:
    steps = read_steps(work)
    goals: list[dict] = []
    fused_goals(work, steps, goals)
    ot_goals(work, steps, goals)
    ncl_goals(work, steps, goals)
    extra_goals(work, steps, goals)
    return goals, steps


def format_summary(goals: list[dict], steps: dict, header: list[str]) -> str:
    lines = list(header)
    if steps.get("setup", {}).get("rc", "0") != "0":
        lines.append("SET-UP FAILED: nothing was measured (setup.txt names what is missing)")
    if steps:
        lines.append("steps: " + ", ".join(f"{k} {v['seconds']:.0f} s (exit {v['rc']})" for k, v in steps.items()))
    lines.append("")
    for g in goals:
        lines.append(f"{g['verdict']:12s} {g['goal']}")
        lines.append(f"{'':12s}   goal {g['target'] or '-'}; measured: {g['measured'] or '-'}")
        if g["note"]:
            lines.append(f"{'':12s}   {g['note']}")
    counts = {v: sum(g["verdict"] == v for g in goals) for v in ("PASS", "FAIL", "NOT MEASURED")}
    lines += ["", ", ".join(f"{n} {v}" for v, n in counts.items())]
    return "\n".join(lines) + "\n"


def cmd_summary(args) -> int:
    work, out = Path(args.work), Path(args.out)
    goals, steps = summarize(work)
    header = []
    env = work / "env.txt"
    if env.exists():
        header += env.read_text().strip().splitlines()
    text = format_summary(goals, steps, header)
    (out / "summary.txt").write_text(text)
    parts = {name: _load(work, name) for name in ("a4", "a8", "amix", "b_gsc", "b_detached", "torch", "compile", "c")}
    (out / "results.json").write_text(json.dumps({"goals": goals, "steps": steps, **parts}, indent=2, default=str))
    print(text, end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("ncl", help="the NCL paper's rows next to ours")
    p.add_argument("--db", required=True)
    p.add_argument("--reference", required=True)
    p.add_argument("--experiment", default="ncl_paper")
    p.add_argument("--json", default=None)
    p = sub.add_parser("summary", help="every goal: measured, PASS / FAIL / NOT MEASURED")
    p.add_argument("--work", required=True)
    p.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    return cmd_ncl(args) if args.cmd == "ncl" else cmd_summary(args)


if __name__ == "__main__":
    root = Path(__file__).resolve().parents[2]
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    sys.exit(main())
