"""The devices of this machine and the slots runs execute in.

Below the scheduler and every executor (both need to know what a GPU id means), so no
executor imports the scheduler. Nothing here imports torch unless only torch can answer
(MIG, UUIDs in ``CUDA_VISIBLE_DEVICES``): the coordinator must know its slots before its
first worker starts, and importing torch costs 1-2 s.
"""

from __future__ import annotations

import functools
import multiprocessing as mp
import os
import subprocess
import sys
from dataclasses import dataclass, field

from ablate.errors import OptionError


@dataclass
class Slot:
    """Where one task runs: a device (a physical GPU id, or the CPU) and a thread budget.
    The local executor keeps the slot's worker process and what it trains now here."""

    gpu: int | str | None  # physical GPU id handed to RecBole, or None for CPU
    threads: int | None = None
    label: str | None = None  # what the store records as the device
    enabled: bool = True
    process: mp.process.BaseProcess | None = field(default=None, repr=False)
    conn: object | None = field(default=None, repr=False)
    runs: list[int] = field(default_factory=list)  # the run, or a fused group's runs, it trains now

    @property
    def run_id(self) -> int | None:
        """The first run the slot trains now (None: idle)."""
        return self.runs[0] if self.runs else None

    @property
    def device(self) -> str:
        return self.label or ("cpu" if self.gpu is None else f"cuda:{self.gpu}")


def visible_gpus() -> list[str]:
    """Physical ids of the GPUs this process may use, honouring CUDA_VISIBLE_DEVICES.

    RecBole's Config overwrites CUDA_VISIBLE_DEVICES with ``gpu_id``, so workers must be
    given *physical* ids: with CUDA_VISIBLE_DEVICES=2,3, logical GPU 0 is physical 2.
    Asked of ``nvidia-smi`` where it can answer (plain indices, no MIG), so that the
    coordinator does not import torch (1-2 s) before its first worker can start; of torch
    otherwise.
    """
    if not nvidia_driver_present():
        return []  # skip importing torch (1-2 s) on machines that cannot have a GPU
    listed = _gpus_from_nvidia_smi()
    if listed is not None:
        return listed
    ids = parse_visible_devices(os.environ.get("CUDA_VISIBLE_DEVICES"))
    try:
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - a broken CUDA install means no GPU
        count = 0
    if ids is not None:
        return [str(x) for x in ids[:count]]
    return [str(i) for i in range(count)]


def parse_visible_devices(var: str | None) -> list[int] | list[str] | None:
    """``CUDA_VISIBLE_DEVICES`` as CUDA reads it; None when unset (every GPU).

    The rule of ``torch.cuda._parse_visible_devices``, without importing torch: each entry
    is read like ``strtoul`` (``"1gpu2"`` is 1); the list ends at the first entry that is
    not a number (so ``""``, ``"-1"`` and ``"0,,1"`` stop there); a repeated id hides every
    GPU. ``GPU-``/``MIG-`` UUID lists are kept as strings, up to the first other entry.
    """
    if var is None:
        return None
    for prefix in ("GPU-", "MIG-"):
        if var.startswith(prefix):
            uuids: list[str] = []
            for elem in var.split(","):
                if elem in uuids:
                    return []
                if not elem.startswith(prefix):
                    break
                uuids.append(elem)
            return uuids
    ids: list[int] = []
    for elem in var.split(","):
        x = _strtoul(elem.strip())
        if x in ids:
            return []
        if x < 0:
            break
        ids.append(x)
    return ids


def _strtoul(s: str) -> int:
    """The number ``s`` starts with (sign allowed, as strtoul), or -1 when it starts with none."""
    import re

    m = re.match(r"[+-]?\d+", s)
    return int(m.group()) if m else -1


def countable_without_torch() -> bool:
    """Whether :func:`visible_gpus` can answer without importing torch (no driver, or
    nvidia-smi lists the GPUs and CUDA_VISIBLE_DEVICES holds plain indices)."""
    return not nvidia_driver_present() or _gpus_from_nvidia_smi() is not None


def _gpus_from_nvidia_smi() -> list[str] | None:
    """The visible GPUs' physical ids from nvidia-smi's count and CUDA_VISIBLE_DEVICES, or
    None where only torch can tell (UUIDs, MIG, no answer from nvidia-smi)."""
    ids = parse_visible_devices(os.environ.get("CUDA_VISIBLE_DEVICES"))
    if ids is not None and not all(isinstance(x, int) for x in ids):
        return None
    physical = _nvidia_smi_gpus()
    if physical is None:
        return None
    if ids is None:
        return [str(i) for i in range(physical)]
    visible: list[str] = []
    for x in ids:  # CUDA's rule: the list ends at the first id that does not exist
        if x >= physical:
            break
        visible.append(str(x))
    return visible


def _nvidia_smi_gpus() -> int | None:
    """How many GPUs the driver lists, or None where nvidia-smi cannot say it plainly
    (missing, failing, or MIG enabled: CUDA then sees instances, not GPUs)."""
    import shutil

    exe = shutil.which("nvidia-smi")
    return None if exe is None else _count_listed(exe)


@functools.lru_cache(maxsize=4)
def _count_listed(exe: str) -> int | None:
    """:func:`_nvidia_smi_gpus` for one executable (asked once per process)."""
    try:
        out = subprocess.run([exe, "--query-gpu=index,mig.mode.current", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    rows = [[c.strip() for c in line.split(",")] for line in out.stdout.splitlines() if line.strip()]
    if out.returncode != 0 or not all(r and r[0].isdigit() for r in rows):
        return None
    if any(len(r) > 1 and r[1].lower() == "enabled" for r in rows):
        return None
    return len(rows)


def nvidia_driver_present() -> bool:
    """Cheap check before asking torch: the driver's proc entry or nvidia-smi exists."""
    import shutil

    return os.path.exists("/proc/driver/nvidia/version") or shutil.which("nvidia-smi") is not None


def make_slots(gpus: list[str] | None, per_gpu: int, jobs: int | None, available: list[str],
               cores: int | None = None) -> list[Slot]:
    """Slots for a local sweep.

    ``gpus`` are logical indices (as the user sees them, ``--gpus 0,1``) into
    ``available``; ``per_gpu`` runs share each GPU. Without GPUs, ``jobs`` CPU slots split
    the cores between them so parallel runs do not oversubscribe the machine.
    """
    cores = cores or os.cpu_count() or 1
    if per_gpu < 1:
        raise OptionError("per_gpu", "must be at least 1")
    if gpus is None:
        gpus = [str(i) for i in range(len(available))]
    if gpus:
        slots = []
        for g in gpus:
            try:
                physical = available[int(g)]
            except (ValueError, IndexError):
                have = ",".join(str(i) for i in range(len(available))) or "none"
                raise OptionError("gpus", f"no such GPU here (visible: {have})", value=g) from None
            threads = max(1, cores // (len(gpus) * per_gpu))
            slots.extend(Slot(gpu=physical, threads=threads, label=f"cuda:{physical}") for _ in range(per_gpu))
        return slots
    jobs = jobs or 1
    if jobs < 1:
        raise OptionError("jobs", "must be at least 1")
    threads = max(1, cores // jobs)
    return [Slot(gpu=None, threads=threads, label="cpu") for _ in range(jobs)]


def gpu_memory_mb() -> dict[str, float]:
    """Total memory of each GPU in MiB, by physical index; empty when it cannot be read.

    From nvidia-smi, else from torch in a short child process, so CUDA is never
    initialised in the coordinator: a coordinator holding a CUDA context would take memory
    from, and fork badly into, its workers."""
    try:
        p = subprocess.run(["nvidia-smi", "--query-gpu=index,memory.total", "--format=csv,noheader,nounits"],
                           capture_output=True, text=True, timeout=20)
        if p.returncode == 0:
            out = {}
            for line in p.stdout.strip().splitlines():
                idx, total = (x.strip() for x in line.split(",")[:2])
                out[idx] = float(total)
            if out:
                return out
    except (OSError, subprocess.SubprocessError, ValueError):
        pass
    code = ("import torch\nfor i in range(torch.cuda.device_count()):\n"
            "    print(i, torch.cuda.get_device_properties(i).total_memory / 2**20)")
    try:
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        return {a: float(b) for a, b in (line.split() for line in p.stdout.strip().splitlines())} if p.returncode == 0 else {}
    except (OSError, subprocess.SubprocessError, ValueError):
        return {}
