"""What the OT term costs: LightGCNOT vs LightGCN, epoch time and peak memory.

Real data (each model trains in its own child process, so peak memory is its own), with
the epoch loop ``ablate run`` uses (``--loop recbole``: RecBole's own):

    python bench/ot_overhead.py --dataset ml-1m --data-path /work/shared/data --device cuda

Synthetic graph far too large for any dense N x N matrix (1M nodes: 4 TB as float32),
LightGCNOT trained for one epoch without RecBole's data pipeline:

    python bench/ot_overhead.py --synthetic-nodes 1000000 --device cuda

Extra model settings: ``-p k2=10 -p ot_z2=next`` (applied to LightGCNOT).
Needs only torch, recbole, torch-geometric, numpy, scipy; no network.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def _parse_params(items):
    out = {}
    for item in items or []:
        key, _, val = item.partition("=")
        try:
            out[key] = json.loads(val)
        except json.JSONDecodeError:
            out[key] = val
    return out


def _peak_mb(device) -> float:
    import torch

    if str(device).startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _sync(device):
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _real_child(args, model_name, params, queue):
    sys.argv = sys.argv[:1]  # RecBole's Config reads argv
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from ablate import compat, fastpath

    compat.apply()
    import recbole
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model as rb_get_model
    from recbole.utils import get_trainer, init_seed

    import models

    cls = models.get_model(model_name) or rb_get_model(model_name)
    data_path = args.data_path or os.path.join(os.path.dirname(recbole.__file__), "dataset_example")
    files = [models.default_config_file(model_name)] if models.default_config_file(model_name) else []
    cfg_dict = {
        "data_path": data_path, "epochs": args.epochs, "device": args.device,
        "use_gpu": args.device.startswith("cuda"), "show_progress": False,
        "checkpoint_dir": tempfile.mkdtemp(), "train_batch_size": args.batch_size,
        "seed": 2020, "reproducibility": True, "n_layers": 3, "reg_weight": 1e-4, **params,
    }
    cfg = Config(model=cls, dataset=args.dataset, config_file_list=files, config_dict=cfg_dict)
    init_seed(cfg["seed"], True)
    ds = create_dataset(cfg)
    tr, _, _ = data_preparation(cfg, ds)
    t0 = time.perf_counter()
    model = cls(cfg, tr._dataset).to(cfg["device"])
    build = time.perf_counter() - t0
    trainer = get_trainer(cfg["MODEL_TYPE"], cfg["model"])(cfg, model)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    rss0 = _peak_mb(args.device)
    times, losses = [], None
    fast = args.loop == "fastpath" and fastpath.replaceable(trainer)
    if fast:
        fastpath.vectorize_sampler(tr._sampler)
    for epoch in range(args.epochs):
        _sync(args.device)
        t0 = time.perf_counter()
        if fast:
            losses = fastpath.train_epoch(trainer, tr, epoch, lambda total: None)
        else:
            losses = trainer._train_epoch(tr, epoch, show_progress=False)
        _sync(args.device)
        times.append(time.perf_counter() - t0)
    steady = times[1:] if len(times) > 1 else times
    queue.put({
        "model": model_name, "loop": "fastpath" if fast else "recbole", "build_s": build, "epoch_s": sum(steady) / len(steady), "epochs": times,
        "peak_mb": _peak_mb(args.device), "peak_mb_before_training": rss0,
        "loss_names": list(getattr(model, "loss_names", ("loss",))),
        "losses": list(losses) if isinstance(losses, tuple) else [losses],
    })


def run_real(args, params):
    ctx = mp.get_context("spawn")
    results = {}
    for name in ("LightGCN", "LightGCNOT"):
        queue = ctx.Queue()
        proc = ctx.Process(target=_real_child, args=(args, name, params if name != "LightGCN" else {}, queue))
        proc.start()
        res = queue.get()
        proc.join()
        results[name] = res
        print(json.dumps(res), flush=True)
    base, ot = results["LightGCN"], results["LightGCNOT"]
    mem_key = "peak_mb"
    print(f"\n{'':12s}{'epoch s':>10s}{'peak MB':>10s}  ({args.dataset}, {args.device}, batch {args.batch_size}, "
          f"{args.loop}'s epoch loop)")
    for name in ("LightGCN", "LightGCNOT"):
        print(f"{name:12s}{results[name]['epoch_s']:10.3f}{results[name][mem_key]:10.1f}")
    print(f"{'ratio':12s}{ot['epoch_s'] / base['epoch_s']:10.2f}{ot[mem_key] / max(base[mem_key], 1e-9):10.2f}")
    return results


class _SyntheticDataset:
    """The two things a GeneralRecommender asks of a dataset: counts and the interaction matrix."""

    def __init__(self, n_users, n_items, users, items):
        self.n = {"user_id": n_users, "item_id": n_items}
        self.users, self.items = users, items

    def num(self, field):
        return self.n[field]

    def inter_matrix(self, form="coo"):
        import numpy as np
        import scipy.sparse as sp

        return sp.coo_matrix((np.ones(len(self.users), dtype=np.float32), (self.users, self.items)),
                             shape=(self.n["user_id"], self.n["item_id"]))


def run_synthetic(args, params):
    import numpy as np
    import torch
    import yaml

    if args.threads:
        torch.set_num_threads(args.threads)
    import models

    n_users = args.synthetic_nodes // 2
    n_items = args.synthetic_nodes - n_users
    n_edges = int(args.synthetic_nodes * args.synthetic_degree / 2)
    rng = np.random.default_rng(0)
    users = rng.integers(1, n_users, n_edges)
    # a skewed (Zipf-like) item popularity, as in real interaction data
    items = np.minimum((rng.pareto(1.2, n_edges) * n_items / 50).astype(np.int64) + 1, n_items - 1)
    ds = _SyntheticDataset(n_users, n_items, users, items)
    with open(models.default_config_file("LightGCNOT")) as f:
        cfg = yaml.safe_load(f)
    cfg.update({"USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "NEG_PREFIX": "neg_",
                "device": torch.device(args.device), "embedding_size": args.embedding_size, **params})
    dense_gb = args.synthetic_nodes**2 * 4 / 2**30
    print(f"synthetic graph: {n_users} users, {n_items} items, {n_edges} interactions; "
          f"a dense N x N float32 matrix would take {dense_gb:,.0f} GiB", flush=True)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    model = models.LightGCNOT(cfg, ds).to(args.device)
    build = time.perf_counter() - t0
    print(f"model built in {build:.1f}s", flush=True)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    dev = torch.device(args.device)
    u_t = torch.from_numpy(users).to(dev)
    i_t = torch.from_numpy(items).to(dev)
    order = torch.randperm(n_edges, device=dev)
    n_batches = (n_edges + args.batch_size - 1) // args.batch_size
    if args.max_batches:
        n_batches = min(n_batches, args.max_batches)
    model.train()
    _sync(args.device)
    t0 = time.perf_counter()
    totals = None
    for b in range(n_batches):
        idx = order[b * args.batch_size : (b + 1) * args.batch_size]
        inter = {"user_id": u_t[idx], "item_id": i_t[idx],
                 "neg_item_id": torch.randint(1, n_items, (idx.numel(),), device=dev)}
        opt.zero_grad()
        losses = model.calculate_loss(inter)
        loss = sum(losses)
        if not torch.isfinite(loss):
            raise SystemExit(f"non-finite loss at batch {b}: {[x.item() for x in losses]}")
        loss.backward()
        opt.step()
        vals = [x.item() for x in losses]
        totals = vals if totals is None else [a + v for a, v in zip(totals, vals)]
    _sync(args.device)
    took = time.perf_counter() - t0
    print(json.dumps({"synthetic_nodes": args.synthetic_nodes, "batches": n_batches, "epoch_s": took,
                      "peak_mb": _peak_mb(args.device), "loss_names": list(model.loss_names),
                      "mean_losses": [t / n_batches for t in totals]}))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="ml-100k")
    p.add_argument("--data-path", default=None, help="default: RecBole's bundled dataset_example")
    p.add_argument("--device", default="cpu")
    p.add_argument("--epochs", type=int, default=2, help="epochs per model; the first is a warm-up when > 1")
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--loop", choices=["fastpath", "recbole"], default="fastpath",
                   help="epoch loop: ablate's (what `ablate run` trains with) or RecBole's own")
    p.add_argument("-p", "--param", action="append", help="LightGCNOT setting key=value (JSON value)")
    p.add_argument("--synthetic-nodes", type=int, default=0, help="train LightGCNOT on a random graph instead")
    p.add_argument("--synthetic-degree", type=float, default=10.0, help="mean degree of the synthetic graph")
    p.add_argument("--embedding-size", type=int, default=64)
    p.add_argument("--max-batches", type=int, default=0, help="cap the synthetic epoch (0: the full epoch)")
    p.add_argument("--json", default=None, help="real data: write both models' figures and LightGCNOT's settings here")
    args = p.parse_args(argv)
    params = _parse_params(args.param)
    if args.synthetic_nodes:
        run_synthetic(args, params)
    else:
        results = run_real(args, params)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"dataset": args.dataset, "device": args.device, "batch_size": args.batch_size,
                           "epochs": args.epochs, "loop": args.loop, "params": params, **results}, f, indent=2)


if __name__ == "__main__":
    main()
