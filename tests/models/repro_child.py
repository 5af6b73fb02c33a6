"""Child process of ``test_reproducible.py``: train each case for a few batches, save the
per-batch loss terms and the final parameters.

Run in a fresh interpreter so that nothing (thread pool, RNG, caches, hash seed) carries
over between the two runs the test compares::

    python tests/models/repro_child.py ROOT OUT.pt THREADS BATCHES CASE [CASE ...]

``CASE`` is a key of :data:`CASES`. ``ROOT`` is the directory that holds ``models/``.
"""

from __future__ import annotations

import os
import sys

# model name, config overrides; embedding 32 and batch 2048 make every gather's backward
# cross torch's 32768-element threshold for multi-threaded accumulation. Few OT solver
# iterations: hundreds of tiny kernels per batch crawl on a loaded 2-core machine, and
# the iteration count does not change which ops run.
_OT = {"ot_weight": 0.1, "wd_iters": 5, "gw_outer": 2, "gw_inner": 5}
CASES = {
    "ot": ("LightGCNOT", {**_OT, "ot_z2": "next"}),
    "ot_gat": ("LightGCNOT", {**_OT, "ot_z2": "gat"}),
    # small lambda: SimGCL's default 0.5 makes the contrastive gradient so large that it
    # rounds away differences in the BPR gradient that it is added to
    "simgcl": ("SimGCL", {"lambda": 1e-4}),
    "xsimgcl": ("XSimGCL", {"lambda": 1e-4}),
}


def main(root: str, out: str, threads: int, batches: int, cases: list[str]) -> None:
    sys.path.insert(0, root)
    sys.argv = sys.argv[:1]  # RecBole's Config reads argv
    import torch

    torch.set_num_threads(threads)
    from ablate import compat

    compat.apply()
    import recbole
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import init_seed

    import models

    data_path = os.path.join(os.path.dirname(recbole.__file__), "dataset_example")
    result = {"threads": torch.get_num_threads()}
    data = None
    for case in cases:
        name, overrides = CASES[case]
        cls = models.get_model(name)
        cfg = Config(
            model=cls, dataset="ml-100k", config_file_list=[models.default_config_file(name)],
            config_dict={
                "data_path": data_path, "epochs": 1, "embedding_size": 32, "n_layers": 2, "device": "cpu",
                "use_gpu": False, "show_progress": False, "seed": 2020, "reproducibility": True,
                "train_batch_size": 2048, **overrides,
            },
        )
        init_seed(cfg["seed"], True)
        if data is None:
            data = data_preparation(cfg, create_dataset(cfg))[0]
        init_seed(cfg["seed"], True)
        model = cls(cfg, data.dataset)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        model.train()
        losses = []
        for b, inter in enumerate(data):
            if b == batches:
                break
            terms = model.calculate_loss(inter)
            opt.zero_grad()
            sum(terms).backward()
            opt.step()
            losses.append(torch.stack([t.detach().reshape(()) for t in terms]))
        result[case] = {
            "losses": torch.stack(losses),
            "params": {k: v.detach().clone() for k, v in model.named_parameters()},
        }
    torch.save(result, out)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5:])
