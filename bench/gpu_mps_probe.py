"""On a GPU: do plain PyTorch processes run side by side under ablate's private MPS daemon?

`ablate run --mps` failed on an H200 (all four packed LightGCN runs died with "CUDA error:
an illegal instruction was encountered"). This separates the daemon and the driver from
RecBole: it starts the same daemon ablate starts (``ablate.executors.mps.MPSDaemon``),
runs N client processes that each go through the op families a LightGCN step and a
full-sort evaluation use, a few seconds per family, with ``CUDA_LAUNCH_BLOCKING=1`` so a
fault is reported by the op that caused it, and prints PASS/FAIL per client and family,
then the tail of the daemon's server log. Exit status 1 on any failure.

    python bench/gpu_mps_probe.py --procs 4 --seconds 3
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

FAMILIES = ["dense_mm", "sparse_mm", "gather_scatter", "adam_step", "topk_eval"]


def client(seconds: float) -> int:
    """One MPS client: each op family in turn for ``seconds``; prints one line per family."""
    import torch

    dev = torch.device(os.environ.get("PROBE_DEVICE", "cuda"))  # cpu: a dry run of the script itself
    g = torch.Generator(device=dev).manual_seed(os.getpid())
    n_users, n_items, dim = 6040, 3706, 64
    n = n_users + n_items
    nnz = 1_600_000
    idx = torch.randint(0, n, (2, nnz), device=dev, generator=g)
    adj = torch.sparse_coo_tensor(idx, torch.rand(nnz, device=dev, generator=g), (n, n)).coalesce()
    emb = torch.nn.Parameter(torch.randn(n, dim, device=dev, generator=g) * 0.1)
    opt = torch.optim.Adam([emb], lr=1e-3)

    def dense_mm():
        a = torch.randn(4096, 4096, device=dev, generator=g)
        return (a @ a).sum()

    def sparse_mm():
        x = emb
        for _ in range(3):
            x = torch.sparse.mm(adj, x)
        return x.sum()

    def gather_scatter():
        u = torch.randint(0, n_users, (4096,), device=dev, generator=g)
        i = torch.randint(n_users, n, (4096,), device=dev, generator=g)
        s = (emb[u] * emb[i]).sum(-1)
        out = torch.zeros(n, device=dev).index_add_(0, u, s.detach())
        return torch.nn.functional.logsigmoid(s).mean() + out.sum() * 0

    def adam_step():
        opt.zero_grad(set_to_none=True)
        loss = -gather_scatter() + sparse_mm() * 1e-9
        loss.backward()
        opt.step()
        return loss

    def topk_eval():
        scores = emb[:n_users].detach() @ emb[n_users:].detach().T
        return torch.topk(scores, 50, dim=-1).values.sum()

    ops = {"dense_mm": dense_mm, "sparse_mm": sparse_mm, "gather_scatter": gather_scatter,
           "adam_step": adam_step, "topk_eval": topk_eval}
    bad = 0
    for name in FAMILIES:
        steps, t_end = 0, time.monotonic() + seconds
        try:
            while time.monotonic() < t_end:
                ops[name]().item()
                steps += 1
            print(f"PASS  pid {os.getpid()} {name}: {steps} steps", flush=True)
        except Exception as err:  # noqa: BLE001 - the point is to report it
            print(f"FAIL  pid {os.getpid()} {name} after {steps} steps: {type(err).__name__}: "
                  f"{str(err).splitlines()[0]}", flush=True)
            bad += 1
            break  # a fault under MPS poisons the context: later families would only repeat it
    return 1 if bad else 0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--procs", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--no-mps", action="store_true", help="the same clients without the daemon (control)")
    args = ap.parse_args()
    if args.client:
        return client(args.seconds)

    from ablate.executors.mps import MPSDaemon

    folder = Path(tempfile.mkdtemp(prefix="ablate-mps-probe-"))
    daemon = None if args.no_mps else MPSDaemon(folder)
    if daemon:
        daemon.start()
    env = {**os.environ, "CUDA_LAUNCH_BLOCKING": "1", "PYTHONUNBUFFERED": "1"}
    try:
        procs = [subprocess.Popen([sys.executable, __file__, "--client", "--seconds", str(args.seconds)], env=env)
                 for _ in range(args.procs)]
        codes = [p.wait(timeout=60 + 10 * args.seconds * len(FAMILIES)) for p in procs]
    finally:
        if daemon:
            daemon.stop()
    mode = "without MPS" if args.no_mps else "under MPS"
    print(f"{'PASS' if not any(codes) else 'FAIL'}  {args.procs} clients {mode}: exit codes {codes}")
    for log in ("server.log", "control.log"):
        path = folder / "log" / log
        if path.exists():
            lines = path.read_text(errors="replace").splitlines()
            print(f"--- {log} (last 15 of {len(lines)} lines)")
            print("\n".join(lines[-15:]))
    return 1 if any(codes) else 0


if __name__ == "__main__":
    sys.exit(main())
