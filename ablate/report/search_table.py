"""``ablate table SEARCH --top K``: a search's best trials as a table of their parameters.

Reads nothing: it formats the trials :func:`ablate.search.stored_trials` returns.
"""

from __future__ import annotations

from typing import Any


def _show(value: Any) -> str:
    from ablate.plan import compact

    return compact(value) if isinstance(value, float) else repr(value)


def render_top(trials: list, top: list, name: str, metric: str, fmt: str = "plain") -> str:
    """A search's best trials (``top``, best first, among all its ``trials``): objective,
    the same metric on test, parameters, as text, ``md`` or ``csv``."""
    params = list(trials[0].params)
    header = ["rank", "trial", "run", f"valid {metric}", f"test {metric}", *params, "epochs"]
    rows = [[str(i), str(t.number), str(t.run_id), f"{t.value:.4f}", "" if t.test is None else f"{t.test:.4f}",
             *(_show(t.params.get(p)) if not isinstance(t.params.get(p), str) else t.params.get(p) for p in params),
             str((t.epochs or 0) + 1)] for i, t in enumerate(top, 1)]
    counts: dict[str, int] = {}
    for t in trials:
        counts[t.status] = counts.get(t.status, 0) + 1
    title = f"{name}: {len(trials)} trials (" + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + f"), top {len(top)} by valid {metric}"
    if fmt == "csv":
        import csv
        import io

        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(header)
        for t in top:
            w.writerow([top.index(t) + 1, t.number, t.run_id, t.value, t.test, *(t.params.get(p) for p in params), (t.epochs or 0) + 1])
        return buf.getvalue()
    if fmt == "md":
        lines = [f"**{title}**", "", "| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines) + "\n"
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    lines = [title, "  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines) + "\n"
