"""What a user sees while a sweep runs: a rich live view on a terminal, plain lines otherwise.

The live view lists runs queued, running (with device and epoch) and finished. In a pipe,
a log file or on CI (stdout not a terminal) nothing is redrawn: each run gets one plain
line every N epochs or every so many seconds, whichever comes first (``ablate run
--log-every``), and one when it ends, so that ``ablate run spec.yaml > log`` shows a
long sweep moving instead of staying silent until its first run ends.
"""

from __future__ import annotations

import time

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table

_STYLE = {"done": "green", "failed": "red", "nan": "magenta", "oom": "red", "timeout": "yellow", "interrupted": "yellow",
          "stalled": "yellow"}
# Default of ``ablate run --log-every``: a progress line per run every 10 epochs or every
# minute, whichever comes first.
LOG_EPOCHS = 10
LOG_SECONDS = 60.0
# Epoch times the ETA averages over: recent ones, so a slower stretch (a warm-up, a
# neighbour on the GPU) shows up in it.
ETA_WINDOW = 10


def duration(seconds: float) -> str:
    """``42s``, ``3m05s``, ``2h07m``: short enough for a log line, exact enough to plan by."""
    s = max(0, int(round(seconds)))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class SweepView:
    """The live view on a terminal; plain progress lines otherwise.

    ``log_epochs``/``log_seconds`` (None: that trigger is off) pace the plain lines of a
    run that is not on a terminal; a line due at the end of an epoch that is validated
    waits for the valid score, so that it can show it.
    """

    def __init__(self, total: int, names: dict[int, str], console: Console | None = None, live: bool | None = None,
                 log_epochs: int | None = LOG_EPOCHS, log_seconds: float | None = LOG_SECONDS):
        self.console = console or Console(stderr=False)
        self.total = total
        self.names = names
        self.running: dict[int, dict] = {}
        self.done: dict[str, int] = {}
        self.finished = 0
        self.t0 = time.monotonic()
        self.log_epochs, self.log_seconds = log_epochs, log_seconds
        use_live = self.console.is_terminal if live is None else live
        self._live = Live(self._render(), console=self.console, refresh_per_second=4, transient=True) if use_live else None

    def __enter__(self):
        if self._live:
            self._live.__enter__()
        return self

    def __exit__(self, *exc):
        if self._live:
            self._live.__exit__(*exc)

    def queued_to_running(self, run) -> None:
        self.names.setdefault(run.id, run.name)
        config = getattr(run, "config", None) or {}
        now = time.monotonic()
        self.running[run.id] = {
            "device": "…", "epoch": None, "loss": None, "valid": None, "t": now,
            # for the plain lines
            "epochs": config.get("epochs"), "metric": str(config.get("valid_metric") or "MRR@10").lower(),  # RecBole's default
            "bigger": config.get("valid_metric_bigger", True) is not False,
            "losses": {}, "best": None, "best_epoch": None, "walls": [], "epoch_at": None,
            "doing": "waiting for a worker", "printed_at": now, "printed_epoch": 0, "due": False,
        }

    def event(self, ev: dict) -> None:
        rid = ev.get("run_id")
        info = self.running.get(rid)
        kind = ev.get("type")
        if info is None:
            return
        now = time.monotonic()
        if kind == "started":
            info["device"] = ev.get("device")
            info["t"], info["doing"] = now, "data preparation"
        elif kind == "progress":
            phase, batches = ev.get("phase"), ev.get("batches")
            if phase in ("train", "valid", "test"):
                info["doing"] = f"{phase} batch {ev.get('batch')}" + (f"/{batches}" if batches is not None else "")
            else:
                info["doing"] = f"{phase} set-up"
        elif kind == "epoch":
            info["epoch"] = ev.get("epoch")
            losses = ev.get("losses") or {}
            info["loss"] = sum(losses.values()) if losses else None
            info["losses"], info["doing"] = losses, None
            info["epochs"] = ev.get("epochs") or info["epochs"]
            # an epoch's wall time runs from the previous epoch's end (its validation
            # included), by the worker's clock (events can arrive bunched); the first
            # one's is its training time
            at = ev.get("at", time.time())
            wall = at - info["epoch_at"] if info["epoch_at"] is not None else ev.get("train_seconds")
            if wall is not None:
                info["walls"] = (info["walls"] + [wall])[-ETA_WINDOW:]
            info["epoch_at"] = at
            done = info["epoch"] + 1
            if self.log_epochs and (done - info["printed_epoch"] >= self.log_epochs or done == info["epochs"]):
                if ev.get("validates"):
                    info["due"] = True  # printed with the valid score that follows
                else:
                    self._progress(rid, info)
        elif kind == "valid":
            info["valid"] = ev.get("valid_score")
            info["doing"] = None
            valid, best = info["valid"], info["best"]
            if valid is not None and (best is None or (valid > best if info["bigger"] else valid < best)):
                info["best"], info["best_epoch"] = info["valid"], ev.get("epoch")
            if info["due"]:
                self._progress(rid, info)
        elif kind == "finished":
            self.running.pop(rid, None)
            status = ev.get("status")
            self.done[status] = self.done.get(status, 0) + 1
            self.finished += 1
            self._line(rid, ev, time.monotonic() - info["t"])

    def _line(self, rid, ev, seconds) -> None:
        status = ev.get("status")
        test = (ev.get("metrics") or {}).get("test", {})
        shown = "  ".join(f"{k} {v:.4f}" for k, v in test.items() if k in ("recall@10", "ndcg@10"))
        err = f"  {ev.get('error')}" if ev.get("error") else ""
        style = _STYLE.get(status, "white")
        self.console.print(
            f"[{self.finished}/{self.total}] [{style}]{status:<11}[/{style}] #{rid} {escape(self.names.get(rid, '?'))}  {shown}{escape(err)}  ({seconds:.1f}s)",
            highlight=False, markup=True, soft_wrap=True,
        )

    def _render(self):
        table = Table(box=None, pad_edge=False, show_edge=False)
        for col in ("run", "name", "device", "epoch", "loss", "valid"):
            table.add_column(col)
        for rid, info in sorted(self.running.items()):
            table.add_row(
                f"#{rid}", escape(self.names.get(rid, "?")), str(info["device"]), "" if info["epoch"] is None else str(info["epoch"]),
                "" if info["loss"] is None else f"{info['loss']:.4f}", "" if info["valid"] is None else f"{info['valid']:.4f}",
            )
        done = ", ".join(f"{k} {v}" for k, v in sorted(self.done.items())) or "none yet"
        queued = max(0, self.total - self.finished - len(self.running))
        head = f"queued {queued}  running {len(self.running)}  finished {self.finished}/{self.total} ({done})  {time.monotonic() - self.t0:.0f}s"
        return Group(head, table)

    def refresh(self) -> None:
        if self._live:
            self._live.update(self._render())
            return
        if self.log_seconds:
            now = time.monotonic()
            for rid, info in sorted(self.running.items()):
                if now - info["printed_at"] >= self.log_seconds:
                    self._progress(rid, info)

    # -------------------------------------------------------------- plain lines

    def _progress(self, rid: int, info: dict) -> None:
        """Print a run's progress line (plain text: no markup, no colour, never wrapped)."""
        if self._live:
            return
        info["printed_at"], info["due"] = time.monotonic(), False
        if info["epoch"] is not None:
            info["printed_epoch"] = info["epoch"] + 1
        self.console.print(self.progress_line(rid, info), markup=False, highlight=False, soft_wrap=True, emoji=False)

    def progress_line(self, rid: int, info: dict) -> str:
        """``#3 name  epoch 12/300  bpr 0.1234 reg 0.0012  valid ndcg@10 0.0456 (best 0.0470, epoch 10)
        elapsed 3m05s  ETA 1h02m``, with what the run is doing now when it is between epochs."""
        total = info["epochs"] if info["epochs"] is not None else "?"
        done = 0 if info["epoch"] is None else info["epoch"] + 1
        parts = [f"#{rid} {self.names.get(rid, '?')}", f"epoch {done}/{total}"]
        if info["doing"]:
            parts[-1] += f" ({info['doing']})"
        if info["losses"]:
            parts.append(" ".join(f"{k} {v:.4g}" for k, v in info["losses"].items()))
        if info["valid"] is not None:
            best = ""
            if info["best"] is not None and info["best"] != info["valid"]:
                best = f" (best {info['best']:.4f}, epoch {info['best_epoch'] + 1})"
            parts.append(f"valid {info['metric']} {info['valid']:.4f}{best}")
        parts.append(f"elapsed {duration(time.monotonic() - info['t'])}")
        parts.append(f"ETA {self._eta(info, done)}")
        return "  ".join(parts)

    @staticmethod
    def _eta(info: dict, done: int) -> str:
        """Remaining epochs times the mean of recent epoch wall times (early stopping can
        only make it shorter); ``?`` before the first epoch ends."""
        if not info["walls"] or not isinstance(info["epochs"], int):
            return "?"
        per_epoch = sum(info["walls"]) / len(info["walls"])
        return duration(max(0, info["epochs"] - done) * per_epoch)

