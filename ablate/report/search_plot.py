"""``ablate plot SPEC --search``: a search's optimisation history and each parameter's effect.

One PNG: on the left every trial's objective in the order it was asked (finished trials
as dots, pruned ones as crosses at the last valid score they reached) under the best
value so far; then one panel per searched parameter, the objective against its value
(a log axis for ``loguniform``, the choices side by side for ``choice``). Drawn from the
stored trials (:func:`ablate.search.stored_trials`), like the table.
"""

from __future__ import annotations

from pathlib import Path


def plot_search(trials, space: dict, metric: str, direction: str, out: Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    params = list(space)
    fig, axes = plt.subplots(1, 1 + len(params), figsize=(4.2 * (1 + len(params)), 3.6), squeeze=False)
    ax = axes[0][0]
    done = [t for t in trials if t.status == "done" and t.value is not None]
    pruned = [t for t in trials if t.status == "pruned" and t.value is not None]
    ax.scatter([t.number for t in done], [t.value for t in done], s=18, color="tab:blue", label="done", zorder=3)
    ax.scatter([t.number for t in pruned], [t.value for t in pruned], s=22, marker="x", color="tab:gray",
               label="pruned (last epoch)", zorder=3)
    xs, ys, best = [], [], None
    for t in sorted(done, key=lambda t: t.number):
        if best is None or (t.value > best if direction == "maximize" else t.value < best):
            best = t.value
        xs.append(t.number)
        ys.append(best)
    if xs:
        ax.step(xs, ys, where="post", color="tab:red", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"valid {metric}")
    ax.set_title("optimisation history")
    ax.legend(fontsize=7)
    for ax, name in zip(axes[0][1:], params):
        dim = space[name]
        for group, style in ((done, dict(s=18, color="tab:blue")), (pruned, dict(s=22, marker="x", color="tab:gray"))):
            values = [t.params.get(name) for t in group]
            if dim.kind == "choice":
                labels = [str(c) for c in dim.choice]
                values = [labels.index(str(v)) if str(v) in labels else -1 for v in values]
            ax.scatter(values, [t.value for t in group], **style)
        if dim.kind == "loguniform":
            ax.set_xscale("log")
        if dim.kind == "choice":
            ax.set_xticks(range(len(dim.choice)), [str(c) for c in dim.choice])
        ax.set_xlabel(name)
        ax.set_title(f"{name} ({dim.kind})")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
