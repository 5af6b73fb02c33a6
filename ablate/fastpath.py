"""RecBole's training epoch with the per-batch host work taken out: same numbers, bit for bit.

Why this exists. A small graph model's batch is a millisecond or two of GPU work, and
RecBole 1.2.1 wraps it in host work that a GPU cannot hide:

* the train dataloader walks a ``list(range(n))`` one Python int at a time (random
  sampler, batch sampler, fetch), and ``Interaction[index]`` turns the index array back
  into a Python list before indexing each field: about 3 ms per 4096-row batch;
* the negative sampler checks each drawn item against the user's positives in a Python
  loop over the batch: about 1.4 ms per batch (ml-1m);
* the epoch loop reads every loss term back (``.item()``), tests ``isnan`` in an ``if``
  and copies each batch with a blocking ``.to(device)``: five or more host-GPU
  synchronisations per batch, so the CPU never runs ahead of the GPU, and runs packed
  on one GPU (time-sliced between processes) wait for each other's slices at every one.

What is done instead, each step checked to give RecBole's exact result
(``tests/perf/test_fastpath.py``: every loss, score and metric equal, LightGCN and
LightGCNOT):

* :func:`train_batches`: the same random stream (the DataLoader iterator's seed draw,
  then one ``randperm`` from the loader's generator), the same batches, cut from the
  permutation as slices and gathered with one tensor index per field;
* :func:`vectorize_sampler`: the same ``np.random`` draws in the same order, with the
  membership test done by ``searchsorted`` on sorted ``user * n_items + item`` keys;
* :func:`train_epoch`: the same operations per batch in the same order; loss terms are
  summed on the device in float64 (what Python's float sum of the float32 values gives),
  checked for NaN/inf every :data:`CHECK_EVERY` batches and at the end, and batches are
  copied from pinned memory without blocking;
* :func:`flag_sorted_sparse`, at the start of each epoch: the model's adjacency matrices
  that are already in coalesced order say so, so CUDA's sparse products stop sorting
  them again at every call.

Anything these do not cover (a trainer or dataloader that overrides the methods copied
here, several worker processes, distributed training, AMP's scaler) goes through
RecBole's own code, unchanged. ``fast_path: false`` in a spec turns all of it off.
"""

from __future__ import annotations

import itertools
import types
from typing import Callable, Iterator

import numpy as np

# NaN/inf checks per epoch: one host sync per this many batches (and one at the end).
CHECK_EVERY = 32
# Largest users x items table of positives the vectorised sampler keeps as one bool per
# pair (64 MB; ml-1m needs 22 MB); bigger graphs use a binary search over sorted keys.
TABLE_MAX = 2**26


# -- batches ------------------------------------------------------------------------
def _batchable(loader) -> bool:
    """True when ``loader`` is a plain RecBole TrainDataLoader whose iteration
    :func:`train_batches` reproduces exactly."""
    import torch
    from recbole.data.dataloader.general_dataloader import TrainDataLoader
    from recbole.data.dataset import Dataset

    sampler = getattr(loader, "sampler", None)
    batch_sampler = getattr(loader, "batch_sampler", None)
    if not isinstance(loader, TrainDataLoader) or type(loader).collate_fn is not TrainDataLoader.collate_fn:
        return False
    if loader.num_workers != 0 or not loader.config["single_spec"] or batch_sampler is None:
        return False
    if type(batch_sampler) is not torch.utils.data.BatchSampler or batch_sampler.drop_last:
        return False
    if type(sampler) is torch.utils.data.RandomSampler:
        ok = (sampler.generator is loader.generator and not sampler.replacement
              and sampler.num_samples == len(sampler.data_source))
    else:
        ok = type(sampler) is torch.utils.data.SequentialSampler
    dataset = loader._dataset
    return ok and type(dataset).__getitem__ is Dataset.__getitem__ and type(dataset).join is Dataset.join


def _take(inter, index):
    """``inter[index]`` for a LongTensor index, without RecBole's detour through a list."""
    from recbole.data.interaction import Interaction

    return Interaction({k: v[index] for k, v in inter.interaction.items()})


def _join(dataset, df):
    """``Dataset.join`` with :func:`_take` for the feature lookups."""
    if dataset.user_feat is not None and dataset.uid_field in df:
        df.update(_take(dataset.user_feat, df[dataset.uid_field]))
    if dataset.item_feat is not None and dataset.iid_field in df:
        df.update(_take(dataset.item_feat, df[dataset.iid_field]))
    return df


def train_batches(loader) -> Iterator:
    """One epoch of ``loader``'s batches, equal to ``iter(loader)``'s, with far less Python.

    RNG use is the DataLoader's (torch 2.x): creating the iterator draws one int64 from
    the loader's generator (its worker seed), the random sampler draws ``randperm(n)``
    from the same generator, and one more when it runs out. Falls back to
    ``iter(loader)`` for anything :func:`_batchable` does not recognise.
    """
    import torch

    if not _batchable(loader):
        yield from loader
        return
    n = len(loader.sampler)
    torch.empty((), dtype=torch.int64).random_(generator=loader.generator)
    if isinstance(loader.sampler, torch.utils.data.RandomSampler):
        order = torch.randperm(n, generator=loader.generator)
    else:
        order = torch.arange(n)
    dataset, step = loader._dataset, loader.batch_sampler.batch_size
    for start in range(0, n, step):
        data = _join(dataset, _take(dataset.inter_feat, order[start : start + step]))
        yield loader._neg_sampling(loader.transform(dataset, data))
    if isinstance(loader.sampler, torch.utils.data.RandomSampler):
        # an exhausted RandomSampler has drawn a second permutation for its last
        # ``num_samples % n`` (here 0) indices: draw it too, or the next epoch's order differs
        torch.randperm(n, generator=loader.generator)


# -- negative sampling ----------------------------------------------------------------
def vectorize_sampler(sampler) -> None:
    """Give this sampler instance a vectorised ``sample_by_key_ids`` (same draws, same result).

    RecBole redraws the items that hit a user's positives until none does, testing each
    with ``v in used_set`` in a Python loop. The redraws are kept as they are (the same
    ``self.sampling(len(check_list))`` calls, so ``np.random`` advances identically);
    only the test becomes one gather from a users x items bool table (or, for graphs too
    large for that, a binary search over the sorted ``user * stride + item`` keys).
    """
    from recbole.sampler import Sampler

    # RecBole's user-item Sampler only: its draws are item ids below ``item_num``, which
    # makes ``user * item_num + item`` a key no two pairs share (KG samplers draw entities)
    if type(sampler) is not Sampler or "sample_by_key_ids" in vars(sampler):
        return
    used = sampler.used_ids
    if not isinstance(used, np.ndarray) or used.dtype != object:
        return
    lens = np.fromiter(map(len, used), dtype=np.int64, count=len(used))
    items = np.fromiter(itertools.chain.from_iterable(used), dtype=np.int64, count=int(lens.sum()))
    stride = int(sampler.item_num)
    if items.size and (items.min() < 0 or items.max() >= stride):
        return
    keys = np.repeat(np.arange(len(used), dtype=np.int64), lens) * stride + items
    if len(used) * stride <= TABLE_MAX:  # a bool per (user, item): one gather per test
        table = np.zeros(len(used) * stride, dtype=bool)
        table[keys] = True

        def hits(q):
            return table[q]
    else:  # a binary search per test over the sorted keys
        keys = np.sort(keys)

        def hits(q):
            if not len(keys):
                return np.zeros(len(q), dtype=bool)
            return keys[np.searchsorted(keys, q).clip(max=len(keys) - 1)] == q

    original = sampler.sample_by_key_ids

    def sample_by_key_ids(self, key_ids, num):
        key_ids = np.asarray(key_ids)
        if (key_ids.size == 0 or (key_ids == key_ids[0]).all() or key_ids.dtype.kind not in "iu"
                or key_ids.min() < 0 or key_ids.max() >= len(used)):
            return original(key_ids, num)  # RecBole's single-user branch is vectorised already
        import torch

        total = len(key_ids) * num
        value_ids = np.zeros(total, dtype=np.int64)
        check = np.arange(total)
        key_ids = np.tile(key_ids.astype(np.int64), num)
        while len(check) > 0:
            value_ids[check] = self.sampling(len(check))
            check = check[hits(key_ids[check] * stride + value_ids[check])]
        return torch.tensor(value_ids, dtype=torch.long)

    sampler.sample_by_key_ids = types.MethodType(sample_by_key_ids, sampler)


# -- the model's sparse matrices --------------------------------------------------------
def flag_sorted_sparse(model) -> int:
    """Flag as coalesced the model's sparse COO matrices whose indices are already sorted
    and duplicate-free; returns how many were flagged.

    RecBole's graph models build their adjacency from scipy's canonical (sorted,
    duplicate-free) indices but never say so: LightGCN, NGCF and NCL once, SGL its
    training graph once and its two augmented graphs every epoch. On CUDA,
    ``torch.sparse.mm`` coalesces an unflagged matrix at every call, a sort of every
    edge and a host sync per layer per step (SGL: three graphs). Coalescing a matrix
    that is already in order leaves indices and values as they are, so setting the flag
    after checking the order (one vectorised pass) changes no result.
    """
    flagged = 0
    for attr in vars(model).values():
        for value in attr if isinstance(attr, (list, tuple)) else (attr,):  # SGL's random-walk graphs: one per layer
            flagged += _flag_if_sorted(value)
    return flagged


def _flag_if_sorted(value) -> int:
    import torch

    if not (isinstance(value, torch.Tensor) and value.layout == torch.sparse_coo and value.sparse_dim() == 2
            and not value.is_coalesced()):
        return 0
    idx = value._indices()
    key = idx[0] * value.shape[1] + idx[1]
    if key.numel() < 2 or bool((key[1:] > key[:-1]).all()):
        value._coalesced_(True)
        return 1
    return 0


# -- the epoch loop -------------------------------------------------------------------
def replaceable(trainer) -> bool:
    """True when ``trainer._train_epoch`` is RecBole's generic loop in the case
    :func:`train_epoch` copies (one process, no AMP scaler)."""
    from recbole.trainer import Trainer

    return (isinstance(trainer, Trainer) and type(trainer)._train_epoch is Trainer._train_epoch
            and trainer.config["single_spec"] and not getattr(trainer, "enable_scaler", False))


def _to_device(interaction, device):
    """``interaction.to(device)`` without blocking the host: through pinned memory on CUDA."""
    if device.type != "cuda":
        return interaction.to(device)
    from recbole.data.interaction import Interaction

    return Interaction({k: v.pin_memory().to(device, non_blocking=True) for k, v in interaction.interaction.items()})


def train_epoch(trainer, train_data, epoch_idx: int, check: Callable, loss_func=None):
    """``Trainer._train_epoch`` (RecBole 1.2.1, single process, no progress bar), with no
    host-GPU synchronisation per batch.

    ``check(total)`` gets the float64 sums of the loss terms so far every
    :data:`CHECK_EVERY` batches and at the end; it raises if any is not finite (a NaN
    or inf in any batch's loss makes the sum non-finite, so nothing is missed; it is
    only reported up to ``CHECK_EVERY - 1`` batches later than RecBole would).
    Returns what RecBole returns: a float, or a tuple of floats for tuple losses.
    """
    from ablate import member_hooks as hooks

    model = trainer.model
    model.train()  # (SGL draws its augmented graphs here)
    flag_sorted_sparse(model)
    loss_func = loss_func or model.calculate_loss
    with hooks.training():  # a member of a fused group shares its products and backward
        return _epoch_loop(trainer, train_data, check, loss_func)


def _epoch_loop(trainer, train_data, check: Callable, loss_func):
    import torch
    from torch.nn.utils import clip_grad_norm_

    from ablate import member_hooks as hooks

    model, optimizer, device = trainer.model, trainer.optimizer, trainer.device
    total, is_tuple = None, False
    for batch_idx, interaction in enumerate(train_batches(train_data), start=1):
        interaction = _to_device(interaction, device)
        optimizer.zero_grad()
        with torch.autocast(device_type=device.type, enabled=trainer.enable_amp):
            losses = loss_func(interaction)
        is_tuple = isinstance(losses, tuple)
        loss = sum(losses) if is_tuple else losses
        terms = torch.stack([t.detach().reshape(()) for t in losses]) if is_tuple else loss.detach().reshape(1)
        total = terms.double() if total is None else total + terms.double()
        if batch_idx % CHECK_EVERY == 0:
            check(total)
        hooks.backward(loss)
        if trainer.clip_grad_norm:
            clip_grad_norm_(model.parameters(), **trainer.clip_grad_norm)
        optimizer.step()
    if total is None:
        return None
    check(total)
    values = total.tolist()
    return tuple(values) if is_tuple else values[0]
