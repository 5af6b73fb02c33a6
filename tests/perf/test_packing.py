"""--per-gpu auto: the packing decision (pure), its state, and the executor growing and
shrinking a GPU's slots. No GPU needed: slots are only started on first use."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from ablate.executors import packing
from ablate import devices
from ablate.devices import Slot
from ablate.executors.local import LocalExecutor
from ablate.executors.packing import CONTEXT_MB, AutoPack, slots_for

H100_MB = 81559.0


def test_slots_for_examples():
    # a small graph model on an H100: capped
    assert slots_for(H100_MB, 1500) == 8
    # 0.8 * 81559 / (15000 + 500) = 4.2 -> 4
    assert slots_for(H100_MB, 15000) == 4
    # bigger than the card's share: still one run (it is measured, not refused)
    assert slots_for(H100_MB, 90000) == 1
    # unknown size or peak: one run until something is measured
    assert slots_for(None, 1500) == 1
    assert slots_for(H100_MB, None) == 1
    assert slots_for(16000, 3000, cap=3) == 3
    assert slots_for(16000, 3000, fraction=0.5) == 2  # 8000 / 3500


@given(total=st.floats(1000, 200000), peak=st.floats(0, 100000), cap=st.integers(1, 16))
def test_slots_for_fits_and_is_bounded(total, peak, cap):
    n = slots_for(total, peak, cap=cap)
    assert 1 <= n <= cap
    if n > 1:  # every extra run is paid for within 80% of the card
        assert n * (peak + CONTEXT_MB) <= 0.8 * total + 1e-6
    if n < cap:  # and one more would not fit
        assert (n + 1) * (peak + CONTEXT_MB) > 0.8 * total - 1e-6
    assert slots_for(total, peak * 1.5 + 1, cap=cap) <= n  # more memory per run never packs more


def test_autopack_uses_hint_then_measurements_and_respects_ceiling():
    auto = AutoPack({"0": H100_MB}, hint_mb=15000)
    assert auto.want("0") == 4
    auto.observe("0", 7000)
    assert auto.want("0") == math.floor(0.8 * H100_MB / 7500)  # 8: measurement replaces the hint
    auto.observe("0", 2000)  # the peak is a maximum over runs
    assert auto.want("0") == 8
    auto.ceiling["0"] = 5
    assert auto.want("0") == 5
    assert auto.want("1") == 1  # unknown GPU


def _executor(gpus=("0",), threads=16, total=H100_MB):
    slots = [Slot(gpu=g, threads=threads, label=f"cuda:{g}") for g in gpus]
    return LocalExecutor(slots, auto=AutoPack({g: total for g in gpus}))


def test_executor_grows_a_gpu_when_a_run_reports_its_memory():
    ex = _executor(("0", "1"))
    assert ex.capacity() == 2
    assert ex.observe_peak("0", 15000) == 4
    on0 = [s for s in ex.slots if s.gpu == "0"]
    assert len(on0) == 4 and ex.capacity() == 5
    assert {s.threads for s in on0} == {4}  # the GPU's 16 threads split four ways
    assert [s.threads for s in ex.slots if s.gpu == "1"] == [16]
    assert ex.observe_peak("0", 12000) == 4  # the peak only grows
    assert len([s for s in ex.slots if s.gpu == "0"]) == 4


def test_oom_backoff_sets_a_ceiling_that_growth_respects():
    ex = _executor()
    ex.observe_peak("0", 1000)
    assert len(ex.slots) == 8
    assert ex.shrink("0") is True
    assert ex.capacity() == 7
    assert ex.observe_peak("0", 1000) == 7
    assert ex.capacity() == 7


def test_stored_peak_is_taken_from_runs_of_the_same_model_and_dataset(tmp_path):
    from ablate import plan, spec
    from ablate.store import Status, Store

    path = tmp_path / "s.yaml"
    path.write_text(
        "name: p\nbase: {dataset: ml-100k, epochs: 1}\nseeds: [1, 2, 3]\n"
        "variants:\n  a: {model: LightGCN}\n  b: {model: BPR}\n"
    )
    store = Store(str(tmp_path / "r.db"))
    runs = plan.expand(spec.load_spec(path))
    ids = store.experiment_run_ids(store.sync_experiment(spec.load_spec(path), runs))
    by_model = {}
    for r in store.runs(ids, with_children=False):
        by_model.setdefault(r.model, []).append(r.id)
    lg, bpr = by_model["LightGCN"], by_model["BPR"]
    assert store.peak_mem_mb(lg) is None
    store.finish(lg[0], Status.DONE, peak_mem_mb=900.0)
    store.finish(lg[1], Status.DONE, peak_mem_mb=1200.0)
    store.finish(bpr[0], Status.DONE, peak_mem_mb=5000.0)
    assert store.peak_mem_mb([lg[2]]) == 1200.0
    assert store.peak_mem_mb([bpr[1]]) == 5000.0


def test_gpu_memory_is_read_without_cuda_in_this_process():
    import torch

    sizes = devices.gpu_memory_mb()
    assert isinstance(sizes, dict)
    assert all(v > 0 for v in sizes.values())
    if not torch.cuda.is_available():
        assert sizes == {}
    assert not torch.cuda.is_initialized()
