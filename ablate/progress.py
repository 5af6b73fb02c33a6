"""What a user sees while a sweep runs: a rich live view on a terminal, plain lines otherwise.

The live view lists runs queued, running (with device and epoch) and finished; in a
pipe or on CI it prints one line per finished run instead, so logs stay readable.
"""

from __future__ import annotations

import time

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table

_STYLE = {"done": "green", "failed": "red", "nan": "magenta", "oom": "red", "timeout": "yellow", "interrupted": "yellow"}


class SweepView:
    def __init__(self, total: int, names: dict[int, str], console: Console | None = None, live: bool | None = None):
        self.console = console or Console(stderr=False)
        self.total = total
        self.names = names
        self.running: dict[int, dict] = {}
        self.done: dict[str, int] = {}
        self.finished = 0
        self.t0 = time.monotonic()
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
        self.running[run.id] = {"device": "…", "epoch": None, "loss": None, "valid": None, "t": time.monotonic()}

    def event(self, ev: dict) -> None:
        rid = ev.get("run_id")
        info = self.running.get(rid)
        kind = ev.get("type")
        if info is None:
            return
        if kind == "started":
            info["device"] = ev.get("device")
        elif kind == "epoch":
            info["epoch"] = ev.get("epoch")
            losses = ev.get("losses") or {}
            info["loss"] = sum(losses.values()) if losses else None
        elif kind == "valid":
            info["valid"] = ev.get("valid_score")
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

