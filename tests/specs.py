"""The tiny ml-100k spec, written in one place: the smallest spec that trains and
evaluates a real model on ml-100k (bundled with RecBole), a few seconds a run.

``tiny_yaml()`` is its text; every argument changes one part of it, so a test states
only what it needs beyond the tiny spec::

    tiny_yaml("sig", epochs=2, topk=[10, 20], seeds=[2020, 2021],
              baselines={"LightGCN": {"model": "LightGCN"}})

The ``make_spec`` fixture (tests/conftest.py) writes one into the test's folder;
``write_tiny`` does the same into any folder (for module-scoped fixtures).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import yaml

# eval_batch_size is large on purpose: full-sort evaluation scores
# eval_batch_size // n_items users per batch, and 4096 (two users a batch) makes one
# evaluation of ml-100k take ~17 s instead of ~0.3 s on 2 cores.
TINY_BASE: dict[str, Any] = {
    "dataset": "ml-100k",
    "epochs": 1,
    "embedding_size": 8,
    "train_batch_size": 4096,
    "eval_batch_size": 409600,
    "topk": [10],
    "metrics": ["Recall", "NDCG"],
    "valid_metric": "NDCG@10",
}
BPR = {"BPR": {"model": "BPR"}}


def tiny_yaml(name: str = "tiny", *, seeds: Iterable[int] | None = (2020,), baselines: dict | None = BPR,
              variants: dict | None = None, grid: dict | None = None, search: dict | None = None,
              **settings: Any) -> str:
    """The tiny spec's YAML: ``base`` is :data:`TINY_BASE` updated by ``settings``
    (``epochs=2``, ``topk=[10, 20]``, ``eval_args={...}``); ``seeds``, ``baselines``,
    ``variants``, ``grid`` and ``search`` are the spec's own sections (None or empty:
    left out; the default is one BPR baseline, seed 2020), in that order after name and
    base. The spec's sections hold one key a line; below them lists, and mappings of
    plain values or of lists and mappings of plain values, are written on one line
    (``topk: [10]``, ``BPR: {model: BPR}``, ``learning_rate: {loguniform: [0.0001, 0.1]}``),
    so an error about a row or a search setting names that one line."""
    doc: dict[str, Any] = {"name": name, "base": {**TINY_BASE, **settings}}
    if seeds is not None:
        doc["seeds"] = list(seeds)
    for key, section in (("baselines", baselines), ("variants", variants), ("grid", grid), ("search", search)):
        if section:
            doc[key] = section
    styled = {k: {kk: _styled(vv) for kk, vv in v.items()} if isinstance(v, dict) else _styled(v)
              for k, v in doc.items()}
    return yaml.dump(styled, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=1000, allow_unicode=True)


class _FlowMap(dict):
    pass


class _FlowList(list):
    pass


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(_FlowMap, lambda d, v: d.represent_mapping("tag:yaml.org,2002:map", v, flow_style=True))
_Dumper.add_representer(_FlowList, lambda d, v: d.represent_sequence("tag:yaml.org,2002:seq", v, flow_style=True))


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, (list, tuple)):
        return 1 + max(map(_depth, value), default=0)
    return 0


def _styled(value: Any) -> Any:
    """``value`` with its lists, and its mappings at most two levels deep, marked to be
    written on one line."""
    if isinstance(value, dict):
        inner = {k: _styled(v) for k, v in value.items()}
        return _FlowMap(inner) if _depth(value) <= 2 else inner
    if isinstance(value, (list, tuple)):
        return _FlowList(_styled(v) for v in value)
    return value


def write_tiny(folder: Path, name: str = "tiny", **parts: Any) -> Path:
    """:func:`tiny_yaml` written to ``folder/NAME.yaml``; its path."""
    path = Path(folder) / f"{name}.yaml"
    path.write_text(tiny_yaml(name, **parts), encoding="utf-8")
    return path


def line_of(text: str, needle: str) -> int:
    """The 1-based number of the one line of ``text`` that contains ``needle`` (what an
    error message about that line names)."""
    found = [i for i, line in enumerate(text.splitlines(), 1) if needle in line]
    assert len(found) == 1, f"{needle!r} is on lines {found} of:\n{text}"
    return found[0]
