"""A fused group (``ablate.fused``: runs side by side, one wide propagation per layer, one
backward) gives each member exactly the numbers of its solo run on the CPU: every
per-epoch loss term, every valid score and every test metric, bit for bit.

One group holds every fusible model (RecBole's LightGCN, SimGCL, XSimGCL, LightGCNOT)
with different seeds, learning rates, weights and embedding sizes, and a member that
ends ``nan`` in its first epoch while the others go on. The split is time-ordered, so
the members share one training graph although their seeds differ.

One thread, as in test_warm.py: RecBole's LightGCN gathers rows with ``x[index]``, whose
backward on a CPU with several threads adds rows in a racing order, so two solo runs of
it are not bit-identical either (measured: an embedding size of 24 on 2 threads drifts
in its second epoch); ablate's models gather with ``index_select`` and repeat on any
thread count.
"""

from __future__ import annotations

import pytest

from tests.perf.perf_helpers import numbers, run_tasks, task
from tests.specs import tiny_yaml
from tests.stored import full_metrics

BASE = {
    "dataset": "ml-100k", "epochs": 2, "train_batch_size": 4096, "eval_batch_size": 409600, "embedding_size": 16,
    "n_layers": 2, "topk": [10], "metrics": ["Recall", "NDCG"], "valid_metric": "NDCG@10",
    "eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "TO", "group_by": "user", "mode": "full"},
    "seed": 2020, "metric_decimal_place": 12,  # valid scores to 12 places; final metrics unrounded (perf_helpers.numbers)
}


def member(model: str, **params) -> dict:
    """A resolved config as the plan makes it: the model's own defaults under the settings."""
    from ablate.catalog import model_defaults

    return {**model_defaults(model), **BASE, "model": model, **params}


MEMBERS = [
    member("LightGCN", learning_rate=0.001),
    member("LightGCN", learning_rate=0.004, reg_weight=1e-3, seed=7, embedding_size=24),
    member("SimGCL", cl_weight=0.05, seed=11),
    member("XSimGCL", seed=12, n_layers=3),
    member("LightGCNOT", ot_weight=1e-3, k1=3, k2=2, seed=13),
    member("LightGCN", learning_rate=1e30, seed=14),  # diverges: nan in epoch 0
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("fused")
    solo = run_tasks([task(i, c, root / "solo") for i, c in enumerate(MEMBERS, 1)], root, "solo", "--threads=1")
    fused = run_tasks([task(i, c, root / "fused") for i, c in enumerate(MEMBERS, 1)], root, "fused", "--threads=1",
                      "--fused")
    return solo, fused


def test_each_member_equals_its_solo_run_bit_for_bit(runs):
    solo, fused = runs
    for config, alone, together in zip(MEMBERS, solo["runs"], fused["runs"]):
        assert numbers(together) == numbers(alone), config["model"]
    statuses = [numbers(evs)[-1][1] for evs in fused["runs"]]
    assert statuses == ["done"] * 5 + ["nan"]
    for evs in fused["runs"][:5]:  # compared above: the unrounded means and every user's values
        _, _, _, _, _, _, exact, per_user = numbers(evs)[-1]
        assert set(exact) == set(per_user) == {"valid", "test"}, exact
    # not vacuous: the members trained differently, and their products were really shared
    finals = {str(numbers(evs)[-1][3]) for evs in fused["runs"][:5]}
    assert len(finals) == 5
    assert fused["fused"]["wide"] > 0


def test_the_gpu_path_one_graph_one_backward_matches_to_rounding(runs, tmp_path):
    """On a GPU the members' products are nodes of one autograd graph and one backward
    runs from all their losses (autograd runs GPU nodes on a thread of its own, where a
    member's node cannot wait for the others'). That path, run here on the CPU: each
    member matches its solo run to float32 rounding, not bit for bit, because autograd
    then visits the joint graph in another order and sums some gradients in another
    order (measured: loss terms within 9.8e-7 relative after 2 epochs, metrics equal; the
    test allows 1e-4 and 1e-3)."""
    import math

    solo, _ = runs
    shared = run_tasks([task(i, c, tmp_path) for i, c in enumerate(MEMBERS, 1)], tmp_path, "shared", "--threads=1",
                       "--fused", "--shared-graph")
    assert shared["fused"]["backward"] > 0 and shared["fused"]["wide"] > 0
    for config, alone, together in zip(MEMBERS, solo["runs"], shared["runs"]):
        a, b = numbers(alone), numbers(together)
        assert [x[:2] for x in a] == [x[:2] for x in b], config["model"]  # same events, same statuses
        for x, y in zip(a, b):
            if x[0] == "epoch":
                for name, value in x[2].items():
                    assert math.isclose(value, y[2][name], rel_tol=1e-4, abs_tol=1e-9), (config["model"], name, x, y)
            if x[0] == "finished" and x[1] == "done":
                for split, values in x[3].items():
                    for name, value in values.items():
                        assert math.isclose(value, y[3][split][name], rel_tol=1e-3, abs_tol=1e-3), (config["model"], name)


def test_members_report_their_group_and_write_their_own_logs(runs):
    from pathlib import Path

    _, fused = runs
    started = [next(e for e in evs if e["type"] == "started") for evs in fused["runs"]]
    assert all(e["fused"] == [1, 2, 3, 4, 5, 6] and e["device"] == "cpu+fused6" for e in started)
    for i, e in enumerate(started, 1):
        text = Path(e["log_path"]).read_text()
        assert f"ablate run {i} " in text and all(f"ablate run {j} " not in text for j in range(1, 7) if j != i)


def test_the_group_leaves_no_global_state_behind(runs):
    _, fused = runs
    assert fused["after"] == [fused["before"]]


# ---------------------------------------------------------------------------- through the CLI

SPEC = tiny_yaml("fusecli", epochs=2, variants={
    "ot": {"model": "LightGCNOT", "params": {"k1": 3, "k2": 2}, "grid": {"ot_weight": [1.0e-7, 1.0e-3, 0.1]},
           "run_name": "{ot_weight}ot"},
    "simgcl": {"model": "SimGCL"},
})


@pytest.fixture(scope="module")
def cli_sweeps(tmp_path_factory):
    from typer.testing import CliRunner

    from ablate.cli import app

    d = tmp_path_factory.mktemp("fusecli")
    spec = d / "fusecli.yaml"
    spec.write_text(SPEC, encoding="utf-8")
    runner = CliRunner()
    plan = runner.invoke(app, ["run", str(spec), "--db", str(d / "f.db"), "--fuse", "auto", "--dry-run"])
    fused = runner.invoke(app, ["run", str(spec), "--db", str(d / "f.db"), "--fuse", "3", "--jobs", "1", "--cpu"])
    solo = runner.invoke(app, ["run", str(spec), "--db", str(d / "s.db"), "--jobs", "1", "--cpu"])
    return d, spec, plan, fused, solo


def test_dry_run_shows_the_groups(cli_sweeps):
    *_, plan, _, _ = cli_sweeps
    assert plan.exit_code == 0, plan.output
    assert "5 runs, 4 in 1 fused group(s)" in plan.output
    lines = {line.split("│")[2].strip(): line for line in plan.output.splitlines() if line.count("│") > 8}
    assert "1 (4)" in lines["0.1ot"] and "1 (4)" in lines["simgcl"] and "(" not in lines["BPR"].split("│")[-2]


def test_fused_sweep_stores_what_the_solo_sweep_stores(cli_sweeps):
    """--fuse 3 on one slot: BPR alone (not a graph model), the three OT runs as one group,
    simgcl alone (the group was full): every metric of every run equals the solo sweep's
    at full precision, user by user (ablate's models repeat bit for bit on any thread
    count), and each member's device says it trained in a group of 3."""
    from typer.testing import CliRunner

    from ablate.cli import app
    from ablate.store import Store

    d, spec, _, fused, solo = cli_sweeps
    assert fused.exit_code == 0 and "finished: 5 done" in fused.output, fused.output
    assert solo.exit_code == 0, solo.output
    fused_metrics, solo_metrics = full_metrics(d / "f.db"), full_metrics(d / "s.db")
    assert sorted(map(len, solo_metrics.values())) == [4] * 5  # 5 runs: recall@10, ndcg@10 on valid and test
    assert fused_metrics == solo_metrics  # every unrounded mean and every user's value
    store = Store(str(d / "f.db"), create=False)
    devices = sorted(r.device for r in store.runs())
    store.engine.dispose()
    assert devices == ["cpu", "cpu", "cpu+fused3", "cpu+fused3", "cpu+fused3"], devices
    shown = CliRunner().invoke(app, ["show", "2", "--db", str(d / "f.db")]).output
    assert "cpu+fused3" in shown, shown


def test_rerun_of_a_member_trains_it_alone_and_reproduces_it(cli_sweeps):
    from typer.testing import CliRunner

    from ablate.cli import app

    d, *_ = cli_sweeps
    res = CliRunner().invoke(app, ["rerun", "3", "--db", str(d / "f.db"), "--cpu"])
    assert res.exit_code == 0, res.output
    assert "reproduced: all" in res.output and "exactly" in res.output, res.output


def test_bad_fuse_values_are_one_line_errors(tmp_path):
    from typer.testing import CliRunner

    from ablate.cli import app

    spec = tmp_path / "s.yaml"
    spec.write_text(SPEC, encoding="utf-8")
    for value, message in (("0", "--fuse 0: a group size must be at least 1"),
                           ("many", "--fuse many: expected auto, off or a group size (an integer >= 1)")):
        res = CliRunner().invoke(app, ["run", str(spec), "--db", str(tmp_path / "x.db"), "--fuse", value])
        assert res.exit_code == 2 and res.stderr.strip() == f"ablate: error: {message}", res.output
    res = CliRunner().invoke(app, ["run", str(spec), "--db", str(tmp_path / "x.db"), "--fuse", "x", "--executor", "slurm"])
    assert res.exit_code == 2 and res.stderr.strip().startswith("ablate: error: --fuse x: expected auto, off")
    assert not (tmp_path / "x.db").exists()


def test_groups_follow_the_data_and_the_model():
    """Planning alone: what may share a group."""
    from ablate.sharing import DATA_KEYS, fuse_key, groups

    base = {"dataset": "ml-100k", "train_batch_size": 4096, "seed": 1, "eval_args": {"order": "RO"}}
    runs = [
        (1, "LightGCN", base), (2, "SimGCL", {**base, "cl_weight": 0.1}), (3, "BPR", base),
        (4, "LightGCN", {**base, "seed": 2}),  # a random split: another graph
        (5, "LightGCN", {**base, "train_batch_size": 2048}), (6, "LightGCNOT", {**base, "fast_path": False}),
        (7, "XSimGCL", base),
    ]
    assert groups(runs, 8, DATA_KEYS) == [[1, 2, 7], [3], [4], [5], [6]]
    assert groups(runs, 2, DATA_KEYS) == [[1, 2], [3], [4], [5], [6], [7]]
    assert groups(runs, 1, DATA_KEYS) == [[i] for i in range(1, 8)]
    timed = {**base, "eval_args": {"order": "TO"}}
    assert fuse_key("LightGCN", timed, DATA_KEYS) == fuse_key("SimGCL", {**timed, "seed": 9}, DATA_KEYS)


def test_the_backward_product_is_autogrades_own():
    """RecBole's LightGCN multiplies with torch.sparse.mm; in a group its backward is
    computed as ``adj.t().mm(grad)``, which must be autograd's gradient bit for bit."""
    import torch

    from ablate.member_hooks import _transposed_mm

    g = torch.Generator().manual_seed(0)
    n, nnz = 500, 6000
    idx = torch.randint(0, n, (2, nnz), generator=g)
    adj = torch.sparse_coo_tensor(idx, torch.rand(nnz, generator=g), (n, n)).coalesce()
    x = torch.randn(n, 24, generator=g, requires_grad=True)
    grad = torch.randn(n, 24, generator=g)
    torch.sparse.mm(adj, x).backward(grad)
    assert torch.equal(_transposed_mm(adj, grad), x.grad)


def test_fuse_auto_on_a_gpu_is_capped_by_stored_peak_memory(tmp_path, monkeypatch):
    """`--fuse auto` on GPUs: as many members as 80% of the smallest GPU holds by the
    largest peak stored for these models and data (a GPU of 1000 MiB, peaks of 300 MiB:
    2); nothing stored or no GPU size: the size asked."""
    from ablate import devices
    from ablate.api.sweeps import auto_fuse_size
    from ablate.devices import Slot
    from ablate.store import Run, Store

    store = Store(str(tmp_path / "p.db"))
    with store.session() as s:
        for i, peak in enumerate((300.0, None, 120.0)):
            s.add(Run(key=f"{i:016x}", name="x", model="LightGCN", dataset="ml-1m", seed=i, config={}, status="done",
                      peak_mem_mb=peak))
    slots = [Slot(gpu="0"), Slot(gpu="0")]
    monkeypatch.setattr(devices, "gpu_memory_mb", lambda: {"0": 1000.0})  # a GPU this machine does not have
    assert auto_fuse_size(store, [1, 2, 3], slots, 8) == 2
    monkeypatch.setattr(devices, "gpu_memory_mb", lambda: {})
    assert auto_fuse_size(store, [1, 2, 3], slots, 8) == 8
    store.engine.dispose()


AUTO_SPEC = tiny_yaml("fuseauto", baselines=None,
                      variants={"lr": {"model": "LightGCN", "grid": {"learning_rate": [0.001, 0.002, 0.003, 0.004]}}})
# A stand-in nvidia-smi: one GPU of 1000 MiB, as the real one answers ablate's two queries.
FAKE_SMI = """#!/usr/bin/env bash
case "$*" in
  *index,mig.mode.current*) echo "0, Disabled" ;;
  *index,memory.total*) echo "0, 1000" ;;
  *) exit 9 ;;
esac
"""


def _fused_devices(tmp_path, peak_mb: float | None) -> list[str]:
    """`ablate run --fuse auto` of AUTO_SPEC's four LightGCN runs (one fusible group) on
    the stand-in GPU, with a past LightGCN run on ml-100k that peaked at ``peak_mb``."""
    import os
    import subprocess
    import sys

    from ablate.store import Run, Store

    folder = tmp_path / f"peak{peak_mb}"
    (folder / "bin").mkdir(parents=True)
    smi = folder / "bin" / "nvidia-smi"
    smi.write_text(FAKE_SMI)
    smi.chmod(0o755)
    spec = folder / "fuseauto.yaml"
    spec.write_text(AUTO_SPEC)
    db = folder / "r.db"
    store = Store(str(db))
    with store.session() as s:  # what a GPU run of another experiment stored
        s.add(Run(key="0" * 16, name="past", model="LightGCN", dataset="ml-100k", seed=1, config={}, status="done",
                  peak_mem_mb=peak_mb))
    store.engine.dispose()
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    env.update(PATH=f"{folder / 'bin'}{os.pathsep}{env['PATH']}", COLUMNS="200")
    done = subprocess.run([sys.executable, "-c", "from ablate.cli import main; main()", "run", str(spec), "--db", str(db),
                           "--fuse", "auto"], cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    assert "on 1 slot(s) [cuda:0]" in done.stdout, done.stdout + done.stderr
    store = Store(str(db), create=False)
    try:
        return [r.device for r in store.runs() if r.name != "past"]
    finally:
        store.engine.dispose()


def test_run_fuse_auto_on_a_gpu_groups_as_many_as_the_stored_peak_allows(tmp_path):
    """Through `ablate run`: a GPU of 1000 MiB (a stand-in nvidia-smi) and a stored peak of
    300 MiB for LightGCN on ml-100k give groups of 2 (80% of 1000 / 300); without a stored
    peak the four runs train as one group. Each run's device, as its worker reported it,
    says the group it trained in. (Here torch cannot use the GPU and the runs end failed,
    saying so; on a machine with one they train.)"""
    assert _fused_devices(tmp_path, 300.0) == ["cuda:0+fused2"] * 4
    assert _fused_devices(tmp_path, None) == ["cuda:0+fused4"] * 4
