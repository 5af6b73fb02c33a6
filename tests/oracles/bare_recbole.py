"""One RecBole run the way a researcher runs it today: a fresh process doing what
``recbole.quick_start.run_recbole`` does, step for step.

``python tests/oracles/bare_recbole.py MODEL CONFIG_JSON [--threads N]`` prints one JSON line
``{"valid": {...}, "test": {...}, "exact": {"valid": {...}, "test": {...}}, "seconds": {...}}``
on stdout (last line): RecBole's results (rounded to ``metric_decimal_place``) and the
unrounded means it rounded, read as they pass through each top-k metric's
``topk_result`` (RecBole's own ``value.mean(axis=0)``; nothing it computes changes),
for the best valid epoch and the test evaluation.

Why not call ``run_recbole`` itself: ``import recbole.quick_start`` imports ``ray.tune``,
which fails on this stack (``pkg_resources``), and RecBole 1.2.1 needs ablate's compat
patches (numpy aliases, scipy dok, pandas fillna) plus full unpickling of its own
checkpoint (``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD``) to run at all on numpy 2 / torch 2.6+.
Everything else — Config, init_seed, init_logger, create_dataset, data_preparation,
init_seed again, the model, get_flops, the trainer with tensorboard, fit(saved=True),
evaluate(load_best_model=True) — is the same sequence as quick_start.py (RecBole 1.2.1,
lines 115-155), in the current directory, so it also pays for ./log and ./saved.
"""

from __future__ import annotations

import json
import os
import sys
import time

T0 = time.time()
os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # RecBole's checkpoint pickles its Config


def main(argv: list[str]) -> dict:
    model_name, config_dict = argv[0], json.loads(argv[1])
    threads = int(argv[argv.index("--threads") + 1]) if "--threads" in argv else None
    sys.argv = sys.argv[:1]  # Config() reads overrides from sys.argv

    from ablate import compat

    compat.apply()
    import torch

    if threads:
        torch.set_num_threads(threads)
    from logging import getLogger

    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.data.transform import construct_transform
    from recbole.utils import get_flops, get_model, get_trainer, init_logger, init_seed

    t_import = time.time()
    config = Config(model=model_name, dataset=config_dict["dataset"], config_dict=config_dict)
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    logger = getLogger()
    logger.info(config)
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
    transform = construct_transform(config)
    flops = get_flops(model, dataset, config["device"], logger, transform)
    logger.info(f"FLOPs: {flops}")
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    unrounded, valid_pairs = _read_unrounded(trainer)
    t_fit = time.time()
    best_valid_score, best_valid_result = trainer.fit(train_data, valid_data, saved=True, show_progress=config["show_progress"])
    test_result = trainer.evaluate(test_data, load_best_model=True, show_progress=config["show_progress"])
    t_end = time.time()
    best_valid = [exact for result, exact in valid_pairs if result is best_valid_result]  # the epoch fit() kept
    return {
        "valid": {k: float(v) for k, v in best_valid_result.items()},
        "test": {k: float(v) for k, v in test_result.items()},
        "exact": {"valid": best_valid[0] if best_valid else None, "test": dict(unrounded)},
        "seconds": {"imports": t_import - T0, "prepare": t_fit - t_import, "fit_eval": t_end - t_fit, "total": t_end - T0},
    }


def _read_unrounded(trainer) -> tuple[dict, list]:
    """The unrounded means of the trainer's latest evaluation (a dict refilled by each
    one), and (valid result, its unrounded means) for every valid evaluation of fit().
    Read-only: each top-k metric's ``topk_result`` is called as before and returns what
    it returned."""
    from recbole.evaluator.base_metric import TopkMetric

    latest: dict[str, float] = {}
    for metric in trainer.evaluator.metric_class.values():
        if isinstance(metric, TopkMetric):
            def topk_result(name, value, _metric=metric, _original=metric.topk_result):
                means = value.mean(axis=0)  # what RecBole rounds
                latest.update({f"{name}@{k}".lower(): float(means[k - 1]) for k in _metric.topk})
                return _original(name, value)

            metric.topk_result = topk_result
    evaluate = trainer.evaluator.evaluate

    def evaluate_anew(dataobject):
        latest.clear()
        return evaluate(dataobject)

    trainer.evaluator.evaluate = evaluate_anew
    pairs = []
    valid_epoch = trainer._valid_epoch

    def valid_epoch_kept(*args, **kwargs):
        score, result = valid_epoch(*args, **kwargs)
        pairs.append((result, dict(latest)))
        return score, result

    trainer._valid_epoch = valid_epoch_kept
    return latest, pairs


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])), flush=True)
