"""What one training step launches: LightGCNOT vs LightGCN, counted per phase.

On a GPU, a small graph model's step is bound by kernel launches (each costs the CPU
5-20 us of Python, dispatch and launch whatever its size), not by arithmetic; the OT
term's share of an epoch follows the number of kernels it adds. This script counts them
on any machine, the GPU's ratio without a GPU:

    python bench/ot_ops.py                        # ml-100k, CPU
    python bench/ot_ops.py --device cuda --dataset ml-1m --data-path /path/to/data

Every ATen op of one step (forward, backward, optimizer step) is counted by a
``TorchDispatchMode``, split into kernels and views (views launch nothing). Ops inside
the functions LightGCNOT replays from CUDA graphs (``_draw``, ``_plans``) are counted
apart: on CUDA each of those is one graph launch. Printed: the eager kernels per step of
each model, their ratio, and where LightGCNOT's extra kernels come from.
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

VIEW_OPS = {
    "view", "unsqueeze", "expand", "t", "transpose", "slice", "select", "detach", "reshape", "_unsafe_view",
    "as_strided", "alias", "squeeze", "permute", "split", "split_with_sizes", "unbind", "_reshape_alias",
}


def _counter():
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        """Counts ops by the innermost phase label on :attr:`stack`."""

        def __init__(self):
            super().__init__()
            self.counts = collections.Counter()
            self.stack = ["other"]

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            name = str(func.overloadpacket).split(".")[-1]
            self.counts[(self.stack[-1], "view" if name in VIEW_OPS else "kernel")] += 1
            return func(*args, **(kwargs or {}))

    return Count()


def _label(mode, obj, attr, label):
    fn = getattr(obj, attr)

    @functools.wraps(fn)
    def wrapped(*a, **k):
        mode.stack.append(label)
        try:
            return fn(*a, **k)
        finally:
            mode.stack.pop()

    setattr(obj, attr, wrapped)


def count(model_name, args, params):
    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model as rb_get_model
    from recbole.utils import init_seed

    import models

    cls = models.get_model(model_name) or rb_get_model(model_name)
    files = [models.default_config_file(model_name)] if models.default_config_file(model_name) else []
    import recbole

    data_path = args.data_path or os.path.join(os.path.dirname(recbole.__file__), "dataset_example")
    cfg = Config(model=cls, dataset=args.dataset, config_file_list=files, config_dict={
        "data_path": data_path, "device": args.device, "use_gpu": args.device.startswith("cuda"),
        "show_progress": False, "checkpoint_dir": tempfile.mkdtemp(), "train_batch_size": args.batch_size,
        "seed": 2020, "n_layers": 3, **params,
    })
    init_seed(2020, True)
    train, _, _ = data_preparation(cfg, create_dataset(cfg))
    model = cls(cfg, train._dataset).to(cfg["device"])
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    batch = next(iter(train)).to(cfg["device"])

    def step():
        opt.zero_grad()
        mode.stack.append("forward")
        out = model.calculate_loss(batch)
        mode.stack.pop()
        loss = sum(out) if isinstance(out, tuple) else out
        mode.stack.append("backward")
        loss.backward()
        mode.stack[-1] = "optimizer"
        opt.step()
        mode.stack.pop()

    mode = _counter()
    step()  # not counted: first calls capture graphs and settle LightGCNOT's plan solver
    if model_name == "LightGCNOT":
        _label(mode, model, "propagate", "LightGCN + BPR")
        _label(mode, model, "bpr_reg", "LightGCN + BPR")
        _label(mode, model._draw_fn, "fn", "graphed: draw")
        _label(mode, model._plans, "fn", "graphed: plans")
        _label(mode, model, "views", "views (GAT)")
        _label(mode, model, "_centres", "centres")
        _label(mode, model, "ot_term", "OT costs, distances, loss")
    replay = torch.cuda.CUDAGraph.replay

    def counted(graph):  # replays launch no ATen op: count them where they happen
        mode.counts[("graph replays", "replay")] += 1
        return replay(graph)

    torch.cuda.CUDAGraph.replay = counted
    try:
        mode.counts.clear()
        with mode:
            step()
    finally:
        torch.cuda.CUDAGraph.replay = replay
    return mode.counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--data-path", default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=2048)
    ap.add_argument("-p", "--param", action="append", default=[], help="LightGCNOT setting, key=value (JSON value)")
    args = ap.parse_args()
    sys.argv = sys.argv[:1]  # RecBole's Config reads argv
    from ablate import compat

    compat.apply()
    params = {}
    for item in args.param:
        key, _, val = item.partition("=")
        try:
            params[key] = json.loads(val)
        except json.JSONDecodeError:
            params[key] = val

    def eager(counts):
        return sum(v for (phase, kind), v in counts.items() if kind == "kernel" and not phase.startswith("graphed"))

    base = count("LightGCN", args, {})
    ot = count("LightGCNOT", args, params)
    print(f"kernels per training step ({args.dataset}, {args.device}, batch {args.batch_size}; views not counted):")
    print(f"  LightGCN    {eager(base):6d}")
    graphed = sum(v for (p, k), v in ot.items() if p.startswith("graphed") and k == "kernel")
    replays = ot.get(("graph replays", "replay"), 0)
    where = (f"{replays} CUDA graph replays" if args.device.startswith("cuda")
             else f"{graphed} ops that CUDA graphs replay on a GPU (draw and plans; the Triton plans are 2 kernels there)")
    print(f"  LightGCNOT  {eager(ot):6d}   (+ {where})")
    print(f"  ratio       {eager(ot) / eager(base):6.2f}")
    print("LightGCNOT by phase (kernels, views):")
    phases = sorted({p for p, _ in ot})
    for phase in phases:
        if phase != "graph replays":
            print(f"  {phase:28s}{ot.get((phase, 'kernel'), 0):6d}{ot.get((phase, 'view'), 0):6d}")


if __name__ == "__main__":
    main()
