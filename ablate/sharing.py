"""What runs may share, decided without torch: a worker's dataloaders, and a fused group.

* **Dataloaders.** A warm worker keeps the dataloaders of its last run and hands copies
  to the next run with the same :data:`DATA_KEYS` (``ablate.worker``).
* **A fused group** (``ablate run --fuse``): runs of one graph backbone that build the
  same training graph train side by side in one worker (:mod:`ablate.fused`).
  :func:`fuse_key` decides which runs may; :func:`groups` previews the groups for
  ``--dry-run``; the scheduler claims a run's partners by the same key.

The planner and the scheduler import this module, so it imports nothing heavier than the
standard library.
"""

from __future__ import annotations

import json

# Every config key that recbole/data and recbole/sampler read (RecBole 1.2.1), save the
# per-run folders and save/load switches: what two runs must share to share dataloaders.
# tests/perf/test_warm.py checks this list against RecBole's source.
DATA_KEYS = frozenset({
    "dataset", "data_path", "model", "MODEL_TYPE", "MODEL_INPUT_TYPE", "seed", "repeatable", "eval_args",
    "train_batch_size", "eval_batch_size", "train_neg_sample_args", "valid_neg_sample_args",
    "test_neg_sample_args", "shuffle", "worker", "transform", "single_spec", "world_size", "local_rank",
    "load_col", "unload_col", "unused_col", "additional_feat_suffix", "numerical_features", "normalize_field",
    "normalize_all", "discretization", "threshold", "rm_dup_inter", "filter_inter_by_user_or_item",
    "user_inter_num_interval", "item_inter_num_interval", "val_interval", "entity_kg_num_interval",
    "relation_kg_num_interval", "kg_reverse_r", "token_num_threshold", "field_separator", "seq_separator",
    "encoding", "benchmark_filename", "preload_weight", "seq_len", "LIST_SUFFIX", "MAX_ITEM_LIST_LENGTH",
    "NEG_PREFIX", "USER_ID_FIELD", "ITEM_ID_FIELD", "RATING_FIELD", "TIME_FIELD", "LABEL_FIELD",
    "HEAD_ENTITY_ID_FIELD", "TAIL_ENTITY_ID_FIELD", "RELATION_ID_FIELD", "ENTITY_ID_FIELD",
    "ITEM_LIST_LENGTH_FIELD", "POSITION_FIELD", "POS_ITEMS", "NEG_ITEMS", "MASK_ITEM_SEQ", "MASK_INDEX",
    "REORDER_ITEM_SEQ", "INVERSE_ITEM_SEQ", "CROP_ITEM_SEQ", "CROP_ITEM_SEQ_LEN", "mask_ratio", "ft_ratio",
    "eta", "beta", "convert_token_to_onehot", "alias_of_user_id", "alias_of_item_id", "alias_of_entity_id",
    "alias_of_relation_id",
})


# Models whose training propagates over the normalised user-item adjacency with ablate's
# or RecBole's LightGCN propagation; anything else always trains alone.
FUSIBLE_MODELS = frozenset({"LightGCN", "SimGCL", "XSimGCL", "LightGCNOT"})
# ``--fuse auto``: members per group. On the 2-core CPU, 3-layer products over ml-1m: 4
# side by side 2.5x, 8 side by side 3.0x the throughput of the same runs in turn.
AUTO_SIZE = 8


def fuse_key(model: str, config: dict, data_keys: frozenset[str] = DATA_KEYS) -> str | None:
    """Runs with equal keys may train as one group; None: this run trains alone.

    Members must build the same training graph and batches of the same shape: every data
    setting (:data:`DATA_KEYS`) but the model's name is shared, and the
    seed too unless the split ignores it (``eval_args.order: TO``, a time-ordered split:
    members then share the graph but each shuffles and samples with its own seed).
    ``fast_path: false`` runs RecBole's own epoch loop, whose ``backward`` the group
    cannot join, so such runs train alone.
    """
    if model not in FUSIBLE_MODELS or config.get("fast_path") is False:
        return None
    eval_args = config.get("eval_args") or {}
    order = str(eval_args.get("order", "RO")).upper() if isinstance(eval_args, dict) else "RO"
    skip = {"model", "MODEL_TYPE"} | ({"seed"} if order == "TO" else set())
    parts = {k: config[k] for k in sorted(data_keys - skip) if k in config}
    parts["reproducibility"] = config.get("reproducibility", True)
    return json.dumps(parts, sort_keys=True, default=str)


def parse_fuse(value: str | int | None) -> int:
    """A fuse setting as a group size: ``off`` -> 1, ``auto`` -> :data:`AUTO_SIZE`, ``N`` -> N."""
    from ablate.errors import OptionError

    text = str(value if value is not None else "off").strip().lower()
    if text == "off":
        return 1
    if text == "auto":
        return AUTO_SIZE
    try:
        n = int(text)
    except ValueError:
        raise OptionError("fuse", "expected auto, off or a group size (an integer >= 1)", value=value) from None
    if n < 1:
        raise OptionError("fuse", "a group size must be at least 1", value=value)
    return n


def groups(runs: list[tuple[int, str, dict]], size: int, data_keys: frozenset[str] = DATA_KEYS) -> list[list[int]]:
    """Run ids in groups of at most ``size`` with equal :func:`fuse_key` (in the order
    given); runs that cannot fuse are groups of one."""
    out: list[list[int]] = []
    open_groups: dict[str, list[int]] = {}
    for rid, model, config in runs:
        key = fuse_key(model, config, data_keys) if size > 1 else None
        if key is None:
            out.append([rid])
            continue
        group = open_groups.get(key)
        if group is None or len(group) >= size:
            group = open_groups[key] = []
            out.append(group)
        group.append(rid)
    return out


class Partners:
    """Claims a run's partners for a fused group: pending runs among ``run_ids`` with its
    :func:`fuse_key`, up to ``size`` runs in all. Used by whoever hands runs to an
    executor (the scheduler's loop, a Slurm submission without waiting), so a group is
    made the same way whatever runs it. ``store``: what claims a run atomically."""

    def __init__(self, store, run_ids: list[int], owner: str, size: int):
        self.store, self.run_ids, self.owner, self.size = store, run_ids, owner, size
        self._keys: dict[int, str | None] | None = None

    def claim(self, run) -> list:
        """Partners of ``run`` (already claimed), claimed now; [] when it trains alone."""
        if self.size <= 1:
            return []
        if self._keys is None:
            self._keys = {r.id: fuse_key(r.model, r.config) for r in self.store.runs(self.run_ids, with_children=False)}
        key = self._keys.get(run.id)
        if key is None:
            return []
        same = [rid for rid, k in self._keys.items() if k == key and rid != run.id]
        partners: list = []
        while same and len(partners) < self.size - 1:
            more = self.store.claim(same, self.owner)
            if more is None:
                break
            partners.append(more)
            same.remove(more.id)
        return partners
