"""Run worker tasks in *this* process, one after another, and dump their events.

``python run_tasks.py tasks.json out.json [--no-cache] [--threads=N] [--fused [--shared-graph]]``. One
process running several tasks is a warm worker; one process per task is a cold run;
``--fused`` trains all tasks as one fused group (``ablate.fused``). Besides the
events, it records the process-global state RecBole could leave behind after each run
(thread count, RNG-affecting flags, logging handlers, argv, cwd) so the test can check
that nothing leaks from one run into the next.
"""

import json
import logging
import os
import sys

from ablate import worker


def global_state() -> dict:
    import numpy as np
    import torch

    return {
        "threads": torch.get_num_threads(),
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "default_dtype": str(torch.get_default_dtype()),
        "grad_enabled": torch.is_grad_enabled(),
        "root_handlers": len(logging.getLogger().handlers),
        "root_level": logging.getLogger().level,
        "argv": sys.argv[:],
        "cwd": os.getcwd(),
        "np_float_alias": hasattr(np, "float_"),
    }


def main() -> None:
    with open(sys.argv[1]) as f:
        tasks = json.load(f)
    cache = "--no-cache" not in sys.argv
    threads = next((int(a.split("=", 1)[1]) for a in sys.argv if a.startswith("--threads=")), None)
    worker.prepare_process(threads)
    out = {"before": global_state(), "runs": [], "after": []}
    if "--fused" in sys.argv:
        from ablate import fused as group, member_hooks as hooks

        if "--shared-graph" in sys.argv:  # the GPU path (one graph, one backward), on the CPU
            hooks.SHARED_GRAPH_DEVICES.add("cpu")
        events: list[dict] = []
        group.execute_group(tasks, events.append, cache=cache)
        out["runs"] = [[e for e in events if e.get("run_id") == t["run_id"]] for t in tasks]
        out["after"].append(global_state())
        out["fused"] = dict(hooks.STATS)
        tasks = []
    for task in tasks:
        events: list[dict] = []
        worker.execute(task, events.append, cache=cache)
        out["runs"].append(events)
        out["after"].append(global_state())
    out["adj_stats"] = dict(worker.ADJ_STATS)
    out["loader_stats"] = dict(worker.LOADER_STATS)
    with open(sys.argv[2], "w") as f:
        json.dump(out, f)


if __name__ == "__main__":
    main()
