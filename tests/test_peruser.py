"""Per-user values of a run: the stored bytes round-trip exactly, and rows pair with the
baseline user by user (by id, over common seeds, mean over seeds per user)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ablate import peruser
from ablate.peruser import PerUser

FIXTURE = Path(__file__).parent / "report" / "fixtures" / "peruser_ml100k.npz"


@pytest.fixture(scope="module")
def ml100k():
    return np.load(FIXTURE)


def _run(z, name: str, seed: int) -> PerUser:
    return PerUser(z[f"users_{seed}"], tuple(z["columns"].tolist()), z[f"values_{name}_{seed}"])


# ---------------------------------------------------------------------------- encoding

@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 300), cols=st.lists(st.sampled_from(["recall@10", "ndcg@10", "recall@20", "hit@5", "mrr@50", "précision@3"]),
                                            unique=True, max_size=5), data=st.data())
def test_encode_decode_round_trip_is_exact(n, cols, data):
    users = data.draw(hnp.arrays(np.int32, n, unique=True, elements=st.integers(-2**31, 2**31 - 1)))
    values = data.draw(hnp.arrays(np.float32, (n, len(cols)), elements=st.floats(width=32, allow_nan=True)))
    pu = PerUser(users, tuple(cols), values)
    back = peruser.decode(peruser.encode(pu))
    assert back.columns == pu.columns
    assert back.users.dtype == np.int32 and back.values.dtype == np.float32
    np.testing.assert_array_equal(back.users, users)  # evaluation order kept
    assert back.values.tobytes() == pu.values.tobytes()  # bit for bit, NaN payloads and -0.0 included
    assert back.equals(pu)


def test_encoded_header_says_what_it_holds(ml100k):
    pu = _run(ml100k, "base", 2020)
    blob = peruser.encode(pu)
    magic, version, codec, _, n_cols, n_users, n_names = struct.unpack_from("<4sBBHHIH", blob)
    assert (magic, version, codec, n_cols, n_users) == (b"ABPU", 1, 1, 4, 943)
    assert blob[16:16 + n_names].decode() == "recall@10\nndcg@10\nrecall@20\nndcg@20"
    payload = zlib.decompress(blob[16 + n_names:])  # plain zlib: int32 ids, then float32 values column by column
    np.testing.assert_array_equal(np.frombuffer(payload[:4 * 943], "<i4"), pu.users)
    np.testing.assert_array_equal(np.frombuffer(payload[4 * 943:4 * 943 * 2], "<f4"), pu.values[:, 0])


def test_encoded_real_values_are_smaller_than_raw(ml100k):
    # ml-100k's real per-user recall/ndcg (943 users x 4): 18,860 bytes raw
    pu = _run(ml100k, "base", 2020)
    raw = pu.users.nbytes + pu.values.nbytes
    size = len(peruser.encode(pu))
    assert raw == 18_860
    assert size < 0.6 * raw, size


@pytest.mark.parametrize("mangle, message", [
    (lambda b: b"XXXX" + b[4:], "no ABPU header"),
    (lambda b: b[:4] + bytes([2]) + b[5:], "format version 2; this ablate reads version 1"),
    (lambda b: b[:5] + bytes([9]) + b[6:], "unknown codec 9"),
    (lambda b: b[:-7], "corrupted payload"),
    (lambda b: b[:-4] + bytes(4), "corrupted payload"),  # zlib's adler32 catches it
    (lambda b: b[:10] + struct.pack("<I", 944) + b[14:], "expected"),
    (lambda b: b[:8] + struct.pack("<H", 5) + b[10:], "header says 5 columns, names give 4"),
    (lambda b: b"", "no ABPU header"),
])
def test_decode_refuses_what_encode_did_not_write(ml100k, mangle, message):
    blob = peruser.encode(_run(ml100k, "base", 2020))
    with pytest.raises(ValueError, match=message):
        peruser.decode(mangle(blob))


@pytest.mark.parametrize("users, columns, values, message", [
    ([1, 2, 2], ("recall@10",), np.zeros((3, 1)), "repeat"),
    ([1, 2], ("recall@10", "recall@10"), np.zeros((2, 2)), "repeat"),
    ([1, 2], ("recall@10",), np.zeros((3, 1)), "users x columns"),
    ([[1, 2]], ("recall@10",), np.zeros((2, 1)), "one-dimensional"),
    ([1.5, 2], ("recall@10",), np.zeros((2, 1)), "integer"),
    ([2**31], ("recall@10",), np.zeros((1, 1)), "int32"),
    ([1], ("a\nb",), np.zeros((1, 1)), "one line"),
])
def test_per_user_refuses_ambiguous_records(users, columns, values, message):
    with pytest.raises(ValueError, match=message):
        PerUser(np.asarray(users), columns, values)


def test_means_are_recboles_unrounded_means_to_float32_precision(ml100k):
    pu = _run(ml100k, "base", 2020)
    exact = ml100k["values_base_2020"].mean(axis=0)  # RecBole's float64 per-user values
    got = np.array(list(pu.means().values()))
    np.testing.assert_allclose(got, exact, rtol=2e-7, atol=0)
    np.testing.assert_allclose(got.round(4), ml100k["means_base_2020"], atol=1e-12)  # what RecBole reported
    assert pu.column("ndcg@20").dtype == np.float32
    with pytest.raises(KeyError, match="no column 'hit@10'"):
        pu.column("hit@10")


def test_from_metric_info_takes_column_k_minus_one_of_recboles_matrices():
    from ablate import compat

    compat.apply()
    from recbole.config import Config
    from recbole.evaluator.metrics import NDCG, Recall

    Config.compatibility_settings(None)  # RecBole's NDCG uses np.float, which its Config puts back

    rng = np.random.default_rng(0)
    pos_index = rng.random((50, 20)) < 0.15
    pos_len = rng.integers(1, 30, 50)
    config = {"metric_decimal_place": 4, "topk": [5, 20]}
    infos = {"recall": Recall(config).metric_info(pos_index, pos_len), "ndcg": NDCG(config).metric_info(pos_index, pos_len)}
    users = rng.permutation(1000)[:50]
    pu = peruser.from_metric_info(users, infos, [5, 20])
    assert pu.columns == ("recall@5", "recall@20", "ndcg@5", "ndcg@20")
    np.testing.assert_array_equal(pu.users, users)
    np.testing.assert_array_equal(pu.column("recall@5"), (pos_index[:, :5].sum(1) / pos_len).astype(np.float32))
    np.testing.assert_array_equal(pu.column("ndcg@20"), infos["ndcg"][:, 19].astype(np.float32))
    # the mean RecBole would report, from the stored float32 values
    want = Recall(config).topk_result("recall", infos["recall"])["recall@20"]
    assert round(pu.means()["recall@20"], 4) == want
    with pytest.raises(ValueError, match=r"expected users x max\(topk\)"):
        peruser.from_metric_info(users[:10], infos, [5])


# ----------------------------------------------------------------------------- pairing

def _pu(users, values, columns=("recall@10",)) -> PerUser:
    return PerUser(np.asarray(users), columns, np.asarray(values, dtype=np.float32).reshape(len(users), -1))


def test_users_pair_by_id_not_by_position():
    base = _pu([3, 1, 2], [0.5, 0.1, 0.25])
    row = _pu([1, 2, 3], [0.2, 0.25, 0.75])
    p = peruser.pair({7: row}, {7: base}, "recall@10")
    np.testing.assert_array_equal(p.users, [1, 2, 3])
    np.testing.assert_allclose(p.d, np.float32([0.2, 0.25, 0.75]).astype(float) - np.float32([0.1, 0.25, 0.5]).astype(float))
    assert p.d[1] == 0.0  # the same float32 value pairs to an exact zero
    assert p.seeds == (7,) and p.n_seeds.tolist() == [1, 1, 1]


def test_mismatched_user_sets_pair_over_their_intersection():
    base = _pu([1, 2, 3, 4], [0.1, 0.2, 0.3, 0.4])
    row = _pu([5, 4, 2], [0.9, 0.8, 0.7])
    p = peruser.pair({1: row}, {1: base}, "recall@10")
    np.testing.assert_array_equal(p.users, [2, 4])
    np.testing.assert_allclose(p.a, np.float32([0.7, 0.8]))
    np.testing.assert_allclose(p.b, np.float32([0.2, 0.4]))


def test_seeds_pair_only_with_the_same_seed_and_each_user_is_the_mean_over_its_seeds():
    base = {1: _pu([1, 2, 3], [0.1, 0.2, 0.3]), 2: _pu([1, 2], [0.5, 0.5]), 3: _pu([1], [0.0])}
    row = {1: _pu([1, 2, 3], [0.2, 0.2, 0.6]), 2: _pu([2, 1], [0.75, 0.25]), 4: _pu([1], [1.0])}
    p = peruser.pair(row, base, "recall@10")
    assert p.seeds == (1, 2)  # seed 3 has no row run, seed 4 no baseline run: never crossed with another seed
    np.testing.assert_array_equal(p.users, [1, 2, 3])
    f = lambda v: float(np.float32(v))  # noqa: E731
    d1 = [f(0.2) - f(0.1), f(0.2) - f(0.2), f(0.6) - f(0.3)]
    d2 = [f(0.25) - f(0.5), f(0.75) - f(0.5)]
    np.testing.assert_allclose(p.d, [(d1[0] + d2[0]) / 2, (d1[1] + d2[1]) / 2, d1[2]], rtol=1e-12)
    assert p.n_seeds.tolist() == [2, 2, 1]  # user 3 was evaluated in seed 1 only
    np.testing.assert_allclose(p.a, [(f(0.2) + f(0.25)) / 2, (f(0.2) + f(0.75)) / 2, f(0.6)], rtol=1e-12)


def test_seed_whose_runs_lack_the_column_is_left_out_and_no_common_seed_is_empty():
    base = {1: _pu([1, 2], [0.1, 0.2]), 2: _pu([1, 2], [0.5, 0.5], columns=("ndcg@10",))}
    row = {1: _pu([1, 2], [0.3, 0.3]), 2: _pu([1, 2], [0.9, 0.9])}
    p = peruser.pair(row, base, "recall@10")
    assert p.seeds == (1,) and p.n_seeds.tolist() == [1, 1]
    empty = peruser.pair({5: _pu([1], [0.1])}, {6: _pu([1], [0.2])}, "recall@10")
    assert len(empty) == 0 and empty.seeds == () and empty.d.shape == (0,)


def test_real_runs_of_two_seeds_pair_to_the_mean_of_the_per_seed_differences(ml100k):
    z = ml100k
    row = {s: _run(z, "weak", s) for s in (2020, 2021)}
    base = {s: _run(z, "base", s) for s in (2020, 2021)}
    # the baseline's runs list users in another order than the row's: pairing must not care
    flip = np.random.default_rng(0).permutation(943)
    base[2021] = PerUser(base[2021].users[flip], base[2021].columns, base[2021].values[flip])
    p = peruser.pair(row, base, "ndcg@10")
    assert p.seeds == (2020, 2021) and len(p) == 943 and (p.n_seeds == 2).all()
    j = 1  # ndcg@10
    per_seed = [z[f"values_weak_{s}"][:, j].astype(np.float32).astype(float) - z[f"values_base_{s}"][:, j].astype(np.float32).astype(float)
                for s in (2020, 2021)]
    order = [np.argsort(z[f"users_{s}"]) for s in (2020, 2021)]
    want = (per_seed[0][order[0]] + per_seed[1][order[1]]) / 2
    np.testing.assert_allclose(p.d, want, rtol=1e-12, atol=1e-15)
    assert p.d.mean() < -0.1  # the weak variant is far below the baseline on every seed


def test_stack_puts_rows_on_one_user_axis_with_nan_where_unpaired():
    p1 = peruser.pair({1: _pu([1, 2], [0.5, 0.5])}, {1: _pu([1, 2], [0.25, 0.0])}, "recall@10")
    p2 = peruser.pair({1: _pu([2, 9], [1.0, 0.5])}, {1: _pu([2, 9], [0.5, 0.5])}, "recall@10")
    users, a, b = peruser.stack([p1, p2])
    np.testing.assert_array_equal(users, [1, 2, 9])
    np.testing.assert_array_equal(a - b, [[0.25, 0.5, np.nan], [np.nan, 0.5, 0.0]])
    u0, a0, b0 = peruser.stack([])
    assert u0.shape == (0,) and a0.shape == (0, 0)


def test_peruser_imports_only_numpy():
    import subprocess
    import sys

    code = "import sys, ablate.peruser; print(sorted(m for m in ('torch', 'pandas', 'scipy', 'sqlalchemy') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_pair_columns_equals_pair_column_by_column_whatever_the_users_order(ml100k):
    z = ml100k
    row = {s: _run(z, "weak", s) for s in (2020, 2021)}
    base = {s: _run(z, "base", s) for s in (2020, 2021)}
    both = peruser.pair_columns(row, base, list(z["columns"]))
    rng = np.random.default_rng(1)
    shuffled = {}
    for s, pu in row.items():  # every run in its own order, one user missing from the row in 2021
        order = rng.permutation(len(pu))[: len(pu) - (s == 2021)]
        shuffled[s] = PerUser(pu.users[order], pu.columns, pu.values[order])
    for column in z["columns"]:
        one = peruser.pair(row, base, column)
        np.testing.assert_array_equal(both[column].users, one.users)
        np.testing.assert_array_equal(both[column].d, one.d)
        moved = peruser.pair(shuffled, base, column)
        missing = np.setdiff1d(row[2021].users, shuffled[2021].users)
        assert len(moved) == 943 and moved.n_seeds[np.searchsorted(moved.users, missing)].tolist() == [1]
        keep = ~np.isin(one.users, missing)
        np.testing.assert_allclose(moved.d[keep], one.d[keep], rtol=1e-12, atol=0)
    _, a, b = peruser.stack([both["recall@10"], both["ndcg@10"]])
    np.testing.assert_array_equal(a, np.stack([both["recall@10"].a, both["ndcg@10"].a]))
