"""Each RecBole compatibility patch, on its own: the breakage it fixes, then the fix."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from ablate import compat


def test_numpy_aliases_let_recbole_config_set_its_own():
    compat.apply()
    assert np.float_ is np.float64 and np.complex_ is np.complex128 and np.unicode_ is np.str_


def test_dok_update_has_the_old_private_semantics():
    compat.apply()
    m = sp.dok_matrix((3, 3), dtype=np.float32)
    m._update({(0, 1): 1.0, (2, 0): 2.0})
    assert m.toarray().tolist() == [[0, 1, 0], [0, 0, 0], [2, 0, 0]]


def test_fill_nan_really_fills_under_copy_on_write():
    compat.apply()
    from recbole.data.dataset import Dataset
    from recbole.utils import FeatureType

    class Fake:
        feat_name_list = ["inter_feat"]
        inter_feat = pd.DataFrame({"u": [1.0, np.nan], "x": [1.0, np.nan]})
        field2type = {"u": FeatureType.TOKEN, "x": FeatureType.FLOAT}

    Dataset._fill_nan(Fake)
    assert Fake.inter_feat["u"].tolist() == [1.0, 0.0]
    assert Fake.inter_feat["x"].tolist() == [1.0, 1.0]


def test_checkpoints_with_pickled_objects_load(tmp_path):
    class Cfg:  # RecBole pickles its Config inside the checkpoint
        pass

    path = tmp_path / "c.pth"
    torch.save({"config": {"a": 1}, "obj": np.float64(1.5), "state_dict": {"w": torch.ones(2)}}, path)
    assert compat.load_checkpoint(path)["state_dict"]["w"].sum().item() == 2


def test_apply_is_idempotent():
    compat.apply()
    compat.apply()
    assert np.float_ is np.float64


def test_faiss_kmeans_asked_for_a_gpu_runs_on_the_cpu():
    compat.apply()
    import faiss

    x = np.random.default_rng(0).standard_normal((200, 8)).astype("float32")
    km = faiss.Kmeans(d=8, k=4, gpu=True)  # what NCL's e_step asks for
    km.train(x)
    assert km.centroids.shape == (4, 8)
