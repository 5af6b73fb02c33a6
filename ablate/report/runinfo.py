"""One run in full, as ``ablate show`` and the HTML report present it: the baseline it is
read against, what its config changes, the end of its log."""

from __future__ import annotations

import re
from pathlib import Path

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def baseline_of(store, run) -> tuple[object | None, str]:
    """The run to diff against: the first baseline of an experiment holding ``run`` (same
    seed when there is one), else the original of a rerun. Returns (run, why)."""
    rows = store.baselines_beside(run.id)
    if rows:
        first = rows[0][0]
        same = [r for r in rows if r[0] == first]
        pick = next((r for r in same if r[2] == run.seed), same[0])
        if pick[1] != run.id:
            return store.get_run(pick[1]), f"baseline {first} (run {pick[1]}, seed {pick[2]})"
    if run.rerun_of is not None:
        return store.get_run(run.rerun_of), f"original run {run.rerun_of}"
    return None, ""


def config_diff(a: dict, b: dict) -> list[tuple[str, object, object]]:
    """Keys whose values differ, run-local settings left out (they never change results)."""
    from ablate.plan import LOCAL_KEYS

    missing = object()
    out = []
    for k in sorted((a.keys() | b.keys()) - LOCAL_KEYS):
        va, vb = a.get(k, missing), b.get(k, missing)
        if va != vb:
            out.append((k, "-" if va is missing else va, "-" if vb is missing else vb))
    return out


def tail(path: str | None, n: int) -> list[str] | None:
    """Last ``n`` lines of a log, colour codes (RecBole's colorlog) stripped."""
    if not path or not Path(path).is_file():
        return None
    with open(path, encoding="utf-8", errors="replace") as fh:
        lines = fh.read().splitlines()
    return [_ANSI.sub("", line) for line in (lines[-n:] if n > 0 else [])]
