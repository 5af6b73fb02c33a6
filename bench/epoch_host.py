"""Host work of a training epoch: RecBole's loop vs ``ablate.fastpath``, side by side.

For RecBole's LightGCN (batch 4096) on one dataset, in one process:

1. producing the epoch's batches (shuffle, gather, negative sampling): RecBole's
   DataLoader and sampler vs ``fastpath.train_batches`` with the vectorised sampler;
   the batches are checked equal;
2. a whole training epoch: ``Trainer._train_epoch`` vs ``fastpath.train_epoch``, each
   on a model built from the same seed; the losses are checked equal;
3. host reads of device values per epoch (``.item()``, ``bool(t)``; on a GPU each one
   is a synchronisation).

    python bench/epoch_host.py                                   # ml-100k, CPU
    python bench/epoch_host.py --dataset ml-1m --data-path ../shared/data --device cuda

Prints ratios (fastpath / RecBole; below 1 is faster) and writes ``epoch_host.json``.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import _out  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="ml-100k")
    ap.add_argument("--data-path", default=None, help="folder holding DATASET/ (default: RecBole's bundled examples)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args()

    from ablate import compat, fastpath

    compat.apply()
    import recbole
    import torch
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.general_recommender import LightGCN
    from recbole.utils import get_trainer, init_seed

    # RecBole's LightGCN gathers rows with x[index], whose backward adds rows with racing
    # atomics on a multi-threaded CPU: two RecBole runs of the same seed drift apart after
    # some batches (ml-1m, 2 threads: at batch 84). Deterministic kernels make "losses
    # equal" below a statement about the two loops, not about thread timing.
    # On a GPU the timing matters more than bit equality (deterministic index_put_ is a
    # slower sort-based kernel there), so the losses are compared to float noise instead.
    if args.device == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    data_path = args.data_path or str(Path(recbole.__file__).parent / "dataset_example")
    sys.argv = sys.argv[:1]
    config = Config(model="LightGCN", dataset=args.dataset, config_dict={
        "data_path": data_path, "train_batch_size": 4096, "state": "ERROR", "show_progress": False,
        "device": args.device, "use_gpu": args.device.startswith("cuda"), "seed": 2020,
        "eval_args": {"split": {"RS": [0.8, 0.1, 0.1]}, "order": "RO", "group_by": "user", "mode": "full"}})
    dataset = create_dataset(config)

    def loader(fast: bool):
        init_seed(2020, True)
        train, _, _ = data_preparation(config, copy.deepcopy(dataset))
        if fast:
            fastpath.vectorize_sampler(train._sampler)
        return train

    def sync(dev=config["device"]):
        if dev.type == "cuda":
            torch.cuda.synchronize()

    print(f"epoch_host: LightGCN on {args.dataset}, batch 4096, {args.epochs} epochs each, device {args.device}", flush=True)
    # 1. batches
    out: dict = {"dataset": args.dataset, "device": args.device}
    batches = {}
    for name, fast in (("recbole", False), ("fastpath", True)):
        train = loader(fast)
        init_seed(7, True)
        t = time.perf_counter()
        epochs = [list(fastpath.train_batches(train) if fast else train) for _ in range(args.epochs)]
        batches[name] = (time.perf_counter() - t, epochs)
    same = all(len(a) == len(b) and all(all(torch.equal(x[k], y[k]) for k in x.interaction) for x, y in zip(a, b))
               for a, b in zip(batches["recbole"][1], batches["fastpath"][1]))
    n_batches = len(batches["recbole"][1][0])
    (tr, _), (tf, _) = batches["recbole"], batches["fastpath"]
    print(f"  batches: RecBole {1e3 * tr / args.epochs / n_batches:.2f} ms/batch, fastpath "
          f"{1e3 * tf / args.epochs / n_batches:.2f} ms/batch: ratio {tf / tr:.3f}; batches {'equal' if same else 'DIFFER'}")
    out["batches"] = {"recbole_s": tr, "fastpath_s": tf, "ratio": tf / tr, "equal": same, "n_batches": n_batches}

    # 2 and 3. whole epochs, and host reads of device values
    class Reads(torch.utils._python_dispatch.TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, a=(), kw=None):
            if func is torch.ops.aten._local_scalar_dense.default and a and a[0].device.type != "cpu":
                Reads.n += 1
            return func(*a, **(kw or {}))

    epochs = {}
    for name, fast in (("recbole", False), ("fastpath", True)):
        train = loader(fast)
        init_seed(2020, True)
        model = LightGCN(config, train._dataset).to(config["device"])
        trainer = get_trainer(config["MODEL_TYPE"], "LightGCN")(config, model)
        losses, times = [], []
        for e in range(args.epochs):
            sync()
            t = time.perf_counter()
            if fast:
                losses.append(fastpath.train_epoch(trainer, train, e, lambda total: bool(torch.isfinite(total).all())))
            else:
                losses.append(trainer._train_epoch(train, e))
            sync()
            times.append(time.perf_counter() - t)
        Reads.n = 0
        with Reads():
            fastpath.train_epoch(trainer, train, args.epochs, lambda total: bool(torch.isfinite(total).all())) if fast \
                else trainer._train_epoch(train, args.epochs)
        epochs[name] = (min(times), losses, Reads.n)
    (er, lr, rr), (ef, lf, rf) = epochs["recbole"], epochs["fastpath"]
    gap = max(abs(a - b) / max(abs(a), 1e-12) for a, b in zip(lr, lf))
    same_losses = lr == lf if args.device == "cpu" else gap <= 1e-5
    print(f"  epoch: RecBole {er:.3f} s, fastpath {ef:.3f} s (min of {args.epochs}): ratio {ef / er:.3f}; "
          f"losses {'equal' if same_losses else 'DIFFER'} ({lr[-1]:.6f}, largest relative gap {gap:.1e})")
    where = "device values read by the host per epoch" + ("" if args.device.startswith("cuda") else " (none on a CPU)")
    print(f"  {where}: RecBole {rr}, fastpath {rf}")
    out["epoch"] = {"recbole_s": er, "fastpath_s": ef, "ratio": ef / er, "losses_equal": same_losses, "loss_gap": gap,
                    "host_reads": {"recbole": rr, "fastpath": rf}}
    print(f"written {_out.write_json('epoch_host.json', out)}")
    return 0 if same and same_losses else 1


if __name__ == "__main__":
    sys.exit(main())
