"""Narrow patches that make RecBole 1.2.1 run on today's numpy, scipy, torch and pandas.

Why patches and not pins: pinning numpy<2, scipy<1.13, torch<2.6 and pandas<3 would drag
the whole stack back to 2023 and clash with the CUDA builds users bring. Each patch
below fixes exactly one measured breakage (see docs/environment.md in the seed) and is
tested on its own in ``tests/test_compat.py``. ``apply()`` is idempotent and is the
first thing the worker does; models/ tests call it too.

What is *not* done here: importing ``recbole.quick_start`` (it imports ``ray.tune``,
which needs ``pkg_resources`` and an old pyarrow). The worker builds Config, dataset,
model and trainer itself, so ray never enters the training path.
"""

from __future__ import annotations

import numpy as np

_applied = False


def _numpy_aliases() -> None:
    """``Config.compatibility_settings`` reads ``np.float_`` & co., removed in numpy 2."""
    for alias, target in (("float_", np.float64), ("complex_", np.complex128), ("unicode_", np.str_)):
        if alias not in np.__dict__:
            setattr(np, alias, target)


def _dok_update() -> None:
    """LightGCN/SGL/NCL call the private ``dok_matrix._update``, removed in scipy 1.13."""
    import scipy.sparse as sp

    if not hasattr(sp.dok_matrix, "_update"):

        def _update(self, data):  # same semantics as scipy's old private method
            self._dict.update(data)

        sp.dok_matrix._update = _update


def _pandas_fillna() -> None:
    """pandas 3 copy-on-write turns ``df[col].fillna(..., inplace=True)`` into a no-op.

    RecBole's ``Dataset._fill_nan`` relies on it; we replace the method with one that
    assigns the filled column back, which is what it always meant.
    """
    from recbole.data.dataset import dataset as ds_mod
    from recbole.utils import FeatureType

    Dataset = ds_mod.Dataset
    if getattr(Dataset._fill_nan, "_ablate_patched", False):
        return

    def _fill_nan(self):
        for feat_name in self.feat_name_list:
            feat = getattr(self, feat_name)
            for field in feat:
                ftype = self.field2type[field]
                if ftype == FeatureType.TOKEN:
                    feat[field] = feat[field].fillna(value=0)
                elif ftype == FeatureType.FLOAT:
                    feat[field] = feat[field].fillna(value=feat[field].mean())
                else:
                    dtype = np.int64 if ftype == FeatureType.TOKEN_SEQ else np.float64
                    feat[field] = feat[field].apply(
                        lambda x: np.array([], dtype=dtype) if isinstance(x, float) else x
                    )

    _fill_nan._ablate_patched = True
    Dataset._fill_nan = _fill_nan


def _faiss_cpu_fallback() -> None:
    """NCL asks for ``faiss.Kmeans(..., gpu=True)``; with faiss-cpu (the only faiss on
    PyPI) that fails. Where faiss sees no GPU, train k-means on the CPU instead."""
    try:
        import faiss
    except ImportError:
        return
    if getattr(faiss.Kmeans, "_ablate_patched", False):
        return
    num_gpus = getattr(faiss, "get_num_gpus", lambda: 0)
    if hasattr(faiss, "StandardGpuResources") and num_gpus() > 0:
        return

    class Kmeans(faiss.Kmeans):
        _ablate_patched = True

        def __init__(self, d, k, **kwargs):
            kwargs["gpu"] = False
            super().__init__(d, k, **kwargs)

    faiss.Kmeans = Kmeans


def apply() -> None:
    """Apply every patch once. Safe to call many times and from any process."""
    global _applied
    if _applied:
        return
    _numpy_aliases()
    _dok_update()
    _pandas_fillna()
    _faiss_cpu_fallback()
    _applied = True


def load_checkpoint(path, map_location=None) -> dict:
    """Load a RecBole checkpoint; torch >= 2.6 defaults to ``weights_only=True``, which
    refuses the pickled ``Config`` inside. The file is our own, so full unpickling is safe."""
    import torch

    return torch.load(path, map_location=map_location, weights_only=False)
