"""Same seed, two fresh processes, two threads: bit-for-bit the same training.

Guards against ops whose CPU result depends on thread timing, such as the backward of
``x[index]`` (racing atomic float adds once a gather has >= 32768 elements and torch
runs more than one thread). ``reproducibility: True`` promises identical reruns; before
the fix, LightGCNOT at ``ot_weight: 0.1`` drifted from its second batch on.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from tests.models.repro_child import CASES

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "repro_child.py")
THREADS = 2
BATCHES = 4


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Both children at once (they share nothing), each training every case."""
    tmp = tmp_path_factory.mktemp("repro")
    # PYTHONHASHSEED: no ordering may hinge on it. OMP_WAIT_POLICY=PASSIVE: with torch's
    # default (spinning) OpenMP threads, two 2-thread children on a loaded 2-core machine
    # ran each batch 40x slower than one thread (0.9 s vs 0.02 s); passive threads
    # still run in parallel, so races still show.
    env = {**os.environ, "PYTHONHASHSEED": "random", "OMP_WAIT_POLICY": "PASSIVE"}
    outs = [str(tmp / f"run{i}.pt") for i in range(2)]
    procs = [
        subprocess.Popen(
            [sys.executable, CHILD, ROOT, out, str(THREADS), str(BATCHES), *CASES],
            cwd=str(tmp), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        for out in outs
    ]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    return [torch.load(out, weights_only=False) for out in outs]


@pytest.mark.parametrize("case", list(CASES))
def test_two_processes_train_identically(two_runs, case):
    a, b = two_runs
    assert a["threads"] == b["threads"] == THREADS
    ra, rb = a[case], b[case]
    assert ra["losses"].shape[0] == BATCHES
    assert torch.isfinite(ra["losses"]).all()
    if CASES[case][0] == "LightGCNOT":
        assert (ra["losses"][:, 2] > 0).all()  # the OT term is on and contributes
    assert torch.equal(ra["losses"], rb["losses"]), (ra["losses"] - rb["losses"]).abs().max()
    assert ra["params"].keys() == rb["params"].keys()
    if case == "ot_gat":
        assert any(k.startswith("gat.") for k in ra["params"])
    for name, pa in ra["params"].items():
        assert torch.equal(pa, rb["params"][name]), name


def test_gather_rows_backward_is_repeatable_with_threads():
    """The op behind the drift, in its worst case: many rows onto few ids, two threads.
    ``x[idx]``'s backward gave 20 different gradients in 20 tries here (loaded or idle
    machine); :func:`gather_rows` must give one, and the right one."""
    from models.lightgcn_base import gather_rows

    saved = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(16, 32, generator=gen)
        idx = torch.randint(0, 16, (131072,), generator=gen)
        upstream = torch.randn(131072, 32, generator=gen)
        grads = []
        for _ in range(8):
            leaf = x.clone().requires_grad_()
            out = gather_rows(leaf, idx)
            (out * upstream).sum().backward()
            grads.append(leaf.grad)
        assert torch.equal(out, x[idx])
        assert all(torch.equal(grads[0], g) for g in grads[1:])
        expected = torch.zeros(16, 32, dtype=torch.float64).index_add_(0, idx, upstream.double())
        torch.testing.assert_close(grads[0].double(), expected, rtol=1e-4, atol=1e-3)
    finally:
        torch.set_num_threads(saved)
