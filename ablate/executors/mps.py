"""A private CUDA MPS daemon for runs packed onto one GPU (``ablate run --mps``).

Without MPS a GPU time-slices between processes: each packed run owns a CUDA context and
the contexts take turns, so four small graph models whose kernels each fill a fraction of
the GPU still run one at a time, plus the switches. Under MPS (NVIDIA's Multi-Process
Service) every client's work goes through one server context, and kernels of different
runs execute at the same time.

ablate starts its own control daemon with its own pipe and log folders (in a temporary
folder the caller removes afterwards), so it needs no root, leaves any system-wide daemon alone, and is quit when
the sweep ends, whatever way it ends. Workers find it through ``CUDA_MPS_PIPE_DIRECTORY``
and ``CUDA_MPS_LOG_DIRECTORY``, set in the coordinator's environment before any worker is
spawned (a spawned process inherits it); the coordinator itself never opens a CUDA context.

The daemon is started without ``CUDA_VISIBLE_DEVICES``: a daemon started under
``CUDA_VISIBLE_DEVICES=2,3`` renumbers those GPUs 0 and 1 for its clients (NVIDIA's MPS
guide), while ablate's workers name GPUs by their physical ids.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

CONTROL = "nvidia-cuda-mps-control"


class MPSError(RuntimeError):
    """The daemon cannot be started; the message is one line for the user."""


class MPSDaemon:
    """``start()`` the daemon and export its folders to this process's environment (and so
    to the workers it spawns later); ``stop()`` quits it and restores the environment."""

    def __init__(self, folder: Path, start_timeout: float = 20.0):
        self.folder = Path(folder)
        self.pipe = self.folder / "pipe"
        self.log = self.folder / "log"
        self.start_timeout = start_timeout
        self._saved: dict[str, str | None] = {}
        self._exe: str | None = None

    def _folders(self) -> dict[str, str]:
        """The variables by which the daemon and its clients find each other, and eager
        module loading: each client loads every kernel when its context opens rather than
        on first use, while other clients' kernels run (see ``worker._load_cuda_libraries``)."""
        return {"CUDA_MPS_PIPE_DIRECTORY": str(self.pipe), "CUDA_MPS_LOG_DIRECTORY": str(self.log),
                "CUDA_MODULE_LOADING": "EAGER"}

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}  # physical numbering
        return {**env, **self._folders()}

    def _log_tail(self) -> str:
        try:
            lines = (self.log / "control.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no control.log"
        return lines[-1] if lines else "control.log is empty"

    def start(self) -> None:
        self._exe = shutil.which(CONTROL)
        if self._exe is None:
            raise MPSError(f"MPS needs {CONTROL} (part of the NVIDIA driver) on PATH; it was not found")
        self.pipe.mkdir(parents=True, exist_ok=True)
        self.log.mkdir(parents=True, exist_ok=True)
        try:
            proc = subprocess.run([self._exe, "-d"], env=self._env(), capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise MPSError(f"cannot start the MPS daemon: {exc}") from None
        if proc.returncode != 0:
            self._exe = None  # nothing to quit
            why = (proc.stderr or proc.stdout).strip().splitlines()
            raise MPSError(f"the MPS daemon did not start (exit {proc.returncode}): {why[-1] if why else 'no message'}")
        deadline = time.monotonic() + self.start_timeout
        while not (self.pipe / "control").exists():  # the daemon creates its control pipe once it serves
            if time.monotonic() > deadline:
                tail = self._log_tail()
                self.stop()
                raise MPSError(f"the MPS daemon made no control pipe within {self.start_timeout:g} s "
                               f"(its log says: {tail})")
            time.sleep(0.05)
        for key, val in self._folders().items():
            self._saved[key] = os.environ.get(key)
            os.environ[key] = val

    def stop(self) -> None:
        """Quit the daemon (it waits for its clients, the workers, to exit) and restore the
        environment. Never raises: it runs on every way out of a sweep."""
        if self._exe is not None:
            try:
                subprocess.run([self._exe], input="quit\n", env=self._env(), capture_output=True, text=True, timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                pass
            self._exe = None
        for key, val in self._saved.items():
            if val is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = val
        self._saved.clear()
