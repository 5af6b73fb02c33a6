"""On a GPU: LightGCNOT's CUDA-graphed steps give what the same steps give eagerly.

The CPU tests check that the draw and the plans are capturable (no host read); only a
GPU can check the capture itself. Each check prints PASS or FAIL; exit status 1 on any
FAIL. About 20 s on ml-100k:

    python bench/gpu/graph_check.py
"""

from __future__ import annotations

import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

FAILED: list[str] = []


def check(name: str, ok: bool, detail: str = "") -> None:
    print(f"{'PASS' if ok else 'FAIL'}  {name}{('  ' + detail) if detail else ''}", flush=True)
    if not ok:
        FAILED.append(name)


def build(**params):
    sys.argv = sys.argv[:1]
    import recbole
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import init_seed

    import models

    cfg = Config(model=models.LightGCNOT, dataset="ml-100k", config_file_list=[models.default_config_file("LightGCNOT")],
                 config_dict={"data_path": os.path.join(os.path.dirname(recbole.__file__), "dataset_example"),
                              "device": "cuda", "use_gpu": True, "show_progress": False,
                              "checkpoint_dir": tempfile.mkdtemp(), "ot_weight": 1.0,
                              "ot_detach_plan": True,  # the graphed, Triton path: plans without autograd
                              **params})
    init_seed(2020, True)
    train, _, _ = data_preparation(cfg, create_dataset(cfg))
    model = models.LightGCNOT(cfg, train._dataset).to(cfg["device"])
    model.train()
    return model, train


def main() -> int:
    import torch

    from ablate import compat

    compat.apply()
    if not torch.cuda.is_available():
        print("no CUDA here: nothing to check")
        return 2
    model, train = build()
    batch = next(iter(train)).to("cuda")
    centres = model._centres(batch)
    model._draw_fn(centres)  # captures
    check("draw captured", bool(model._draw_fn._graphs) and model._draw_fn.error is None, str(model._draw_fn.error or ""))
    torch.manual_seed(5)
    graphed = model._draw_fn(centres)
    torch.manual_seed(5)
    eager = model._draw(centres)
    check("draw replay equals eager (same seed)", all(torch.equal(a, b) for a, b in zip(graphed, eager)))
    again = model._draw_fn(centres)
    check("a second replay draws anew", not torch.equal(again[0], graphed[0]))

    layers = model.propagate()
    z1, z2 = model.views(layers, graphed[0])
    costs = model._pair_costs(z1, z2, graphed[1], model.ot_negatives, True, False, model.ot_cost, model.ot_tau,
                              model.ot_prune).detach()
    p = model._n_pairs
    args = (costs[:p], graphed[3], costs[p:2 * p])
    model._plans(*args)
    t_g, g_g = model._plans(*args)
    t_e, g_e = model._plans.fn(*args)
    check("plans replay equals eager", torch.allclose(t_g, t_e, atol=1e-6) and torch.allclose(g_g, g_e, atol=1e-6),
          f"max |diff| {max((t_g - t_e).abs().max().item(), (g_g - g_e).abs().max().item()):.1e}")

    from models import lightgcn_ot
    from models.ot import triton_plans

    if triton_plans.supported(*args):
        problem = lightgcn_ot._triton_plan_problem(*args, model._plan_args)
        check("Triton plans as close to float64 as PyTorch's float32 plans", problem is None, problem or "")
        plain = model._plan_solver(triton=False)
        for name, fn in (("Triton", model._plans), ("PyTorch", plain)):
            fn(*args)
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(200):
                fn(*args)
            end.record()
            torch.cuda.synchronize()
            print(f"      plans of one step, graph replay, {name}: {start.elapsed_time(end) / 200 * 1000:.0f} us")
    else:
        check("Triton plans usable here", False, f"Triton importable: {triton_plans.triton_available()}")

    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    finite = True
    for i, inter in zip(range(20), train):
        opt.zero_grad()
        losses = model.calculate_loss(inter.to("cuda"))
        finite &= all(torch.isfinite(x).item() for x in losses)
        sum(losses).backward()
        opt.step()
    check("20 training batches with graphs, finite losses", finite)

    model, train = build(sample_adj="cluster", subg1_adj="A", k1=0, k2=5, num_clusters=30)
    for epoch in range(2):
        model.train()  # the epoch clock: new clusters
        model._ensure_clusters()
        nodes, _, coef, _ = model._draw_fn(model._centres(next(iter(train)).to("cuda")))
        same = model.node_cluster[nodes[:, :-1]] == model.node_cluster[nodes[:, -1:]]
        check(f"cluster sampling follows epoch {epoch}'s clusters", bool(same[coef[0] > 0].all()))
    print("all passed" if not FAILED else f"{len(FAILED)} failed: {', '.join(FAILED)}")
    return 1 if FAILED else 0


if __name__ == "__main__":
    sys.exit(main())
