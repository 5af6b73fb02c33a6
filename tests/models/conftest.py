"""Shared fixtures: one ml-100k dataset per session, tiny configs."""

import os
import sys

import pytest

# The Triton OT kernels (models/ot/triton_plans.py) run here in Triton's interpreter. Triton reads
# this when it is first imported (its standard library is decorated then), so it is set
# before any test imports it. On the CPU nothing else looks at it: LightGCNOT uses the
# kernels off CUDA only when a test asks for ot_solver=triton.
os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="session")
def recbole_env(tmp_path_factory):
    """``make(model_cls, **overrides) -> (config, train_data, valid_data, test_data)``."""
    from ablate import compat

    compat.apply()
    import recbole
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import init_seed

    import models

    data_path = os.path.join(os.path.dirname(recbole.__file__), "dataset_example")
    ckpt = str(tmp_path_factory.mktemp("ckpt"))
    cache = {}

    def make(model_cls, **overrides):
        argv, sys.argv = sys.argv, sys.argv[:1]
        try:
            cfg = Config(
                model=model_cls,
                dataset="ml-100k",
                config_file_list=[f for f in [models.default_config_file(model_cls.__name__)] if f],
                config_dict={
                    "data_path": data_path, "epochs": 1, "embedding_size": 16, "device": "cpu",
                    "use_gpu": False, "show_progress": False, "checkpoint_dir": ckpt,
                    "topk": [10, 20, 50], "metrics": ["Recall", "NDCG"], "valid_metric": "NDCG@10",
                    "seed": 2020, "reproducibility": True, "train_batch_size": 2048, "eval_batch_size": 4096,
                    **overrides,
                },
            )
        finally:
            sys.argv = argv
        init_seed(cfg["seed"], True)
        if "data" not in cache:
            ds = create_dataset(cfg)
            cache["data"] = (ds, data_preparation(cfg, ds))
        ds, (tr, va, te) = cache["data"]
        return cfg, tr, va, te

    return make
