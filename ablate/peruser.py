"""Each evaluated user's metric values for one run's split, stored compactly, and the
pairing of two rows' runs user by user.

Why per user. RecBole computes every ranking metric per user (``TopkMetric.metric_info``
returns a users x max(topk) matrix; ``metric@k`` is column ``k - 1``), then averages
over the users and rounds the mean to ``metric_decimal_place``. A table that keeps only
the rounded mean can compare rows over seeds alone (1 to 3 of them: a test with 0 to 2
degrees of freedom). Two runs of the same split rank items for the same users against
the same held-out items, so their per-user values are paired: a test over users has
hundreds or thousands of pairs (:mod:`ablate.report.significance`).

:class:`PerUser` is one run's split: user ids in evaluation order, metric columns
(``recall@10``), values users x columns as float32 (a per-user value such as
hits / |positives| needs no more than float32's 7 digits; the exact means are kept
elsewhere, as RecBole's float64 average). :func:`encode` / :func:`decode` turn it into a
small self-describing byte string for the store: a 16-byte header (magic ``ABPU``, format
version, codec, counts), the column names, then int32 user ids and float32 values
column by column, zlib-compressed (byte-shuffling the floats first compresses these
values worse, not better: many users share the same fraction). ml-1m's 6,040 users x 6
columns are 169 KB raw and 73 KB encoded when a third to a half of the values are zero
(``bench/significance.py``); the real ml-100k runs of the test fixture (943 x 4) take
8.5 KB of 18.9 KB, and 3.5 KB for a barely trained model whose values are mostly 0.

How seeds combine (:func:`pair`). Runs pair only when they share a seed: a seed fixes
the split (RecBole's random ordering of each user's interactions) and the
initialisation, so the same seed is the same test set, and two seeds are two different
test sets whose users must not be matched against each other. Within a seed, users are
matched by id (never by position), over the users both runs evaluated (the
intersection). A user's difference is then the mean over the common seeds that
evaluated that user of (row - baseline); the test runs over users, n = the number of
users paired in at least one seed. With one seed this is the plain per-user paired
difference. With several, averaging first keeps each user one independent observation:
one user's differences in two seeds are correlated (the same person, much the same
held-out items), so counting (seed, user) pairs as independent would overstate n and
understate p. With RecBole's ratio split by user (``RS`` with
``group_by: user``) every user with at least three interactions is in the test set of
every seed, so the users are the same in every seed; the rule only matters for splits
that drop users.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

MAGIC = b"ABPU"
VERSION = 1
CODEC_ZLIB = 1
# magic, format version, codec, reserved, number of columns, number of users, length of the names
_HEADER = struct.Struct("<4sBBHHIH")
_ZLIB_LEVEL = 6  # level 9 saves under 1 % on these values and takes three times as long


@dataclass(frozen=True, eq=False)
class PerUser:
    """One run's per-user values on one split.

    Attributes:
        users: (n,) int32 user ids (RecBole's internal ids) in evaluation order, unique.
        columns: metric names, ``recall@10``, in the order of ``values``' columns.
        values: (n, len(columns)) float32, ``values[i, j]`` is user ``users[i]``'s
            ``columns[j]``.
    """

    users: np.ndarray
    columns: tuple[str, ...]
    values: np.ndarray

    def __post_init__(self) -> None:
        users = np.asarray(self.users)
        if users.ndim != 1:
            raise ValueError(f"users must be one-dimensional, got shape {users.shape}")
        if users.size and not np.issubdtype(users.dtype, np.integer):
            raise ValueError(f"users must be integer ids, got {users.dtype}")
        if users.size and (users.min() < np.iinfo(np.int32).min or users.max() > np.iinfo(np.int32).max):
            raise ValueError("user ids do not fit in int32")
        users = users.astype(np.int32)
        columns = tuple(str(c) for c in self.columns)
        if len(set(columns)) != len(columns):
            raise ValueError(f"column names repeat: {columns}")
        if any("\n" in c or not c for c in columns):
            raise ValueError("column names must be non-empty and on one line")
        values = np.asarray(self.values, dtype=np.float32)
        if values.shape != (len(users), len(columns)):
            raise ValueError(f"values must be users x columns = {(len(users), len(columns))}, got {values.shape}")
        if len(np.unique(users)) != len(users):
            raise ValueError("user ids repeat: each evaluated user has one row")
        object.__setattr__(self, "users", users)
        object.__setattr__(self, "columns", columns)
        object.__setattr__(self, "values", values)

    def __len__(self) -> int:
        return len(self.users)

    def column(self, name: str) -> np.ndarray:
        """One column's values, (n,) float32, in the order of :attr:`users`."""
        try:
            return self.values[:, self.columns.index(name)]
        except ValueError:
            raise KeyError(f"no column {name!r} (have: {', '.join(self.columns)})") from None

    def means(self) -> dict[str, float]:
        """Each column's mean over the users (float64 sums of the float32 values: within
        about 1e-7 of RecBole's unrounded float64 mean)."""
        return {c: float(m) for c, m in zip(self.columns, self.values.astype(np.float64).mean(axis=0))}

    def equals(self, other: PerUser) -> bool:
        return (self.columns == other.columns and np.array_equal(self.users, other.users)
                and np.array_equal(self.values, other.values, equal_nan=True))


def from_metric_info(users, infos: Mapping[str, np.ndarray], topk: Sequence[int]) -> PerUser:
    """A :class:`PerUser` from RecBole's per-user matrices.

    ``infos`` maps a metric's name (``recall``) to what its ``metric_info`` returned on
    the split (users x max(topk)); ``metric@k`` is column ``k - 1``, the column RecBole's
    ``topk_result`` averages. ``users``: the evaluated users in the same order (the user
    ids of the evaluation batches, concatenated).
    """
    columns, cols = [], []
    for name, matrix in infos.items():
        m = np.asarray(matrix)
        if m.ndim != 2 or m.shape[0] != len(users):
            raise ValueError(f"{name}: expected users x max(topk) = ({len(users)}, {max(topk)}), got {m.shape}")
        for k in topk:
            columns.append(f"{name.lower()}@{k}")
            cols.append(m[:, k - 1])
    values = np.column_stack(cols) if cols else np.zeros((len(users), 0))
    return PerUser(users=np.asarray(users), columns=tuple(columns), values=values)


def encode(per_user: PerUser) -> bytes:
    """Bytes for the store: header, names, then zlib(int32 ids + float32 values column by
    column), all little-endian. :func:`decode` reverses it exactly."""
    names = "\n".join(per_user.columns).encode("utf-8")
    if len(names) > 0xFFFF or len(per_user.columns) > 0xFFFF:
        raise ValueError("too many or too long column names")
    header = _HEADER.pack(MAGIC, VERSION, CODEC_ZLIB, 0, len(per_user.columns), len(per_user.users), len(names))
    payload = (per_user.users.astype("<i4").tobytes()
               + np.ascontiguousarray(per_user.values.T, dtype="<f4").tobytes())
    return header + names + zlib.compress(payload, _ZLIB_LEVEL)


def decode(data: bytes) -> PerUser:
    """The :class:`PerUser` that :func:`encode` wrote; ValueError on anything else (another
    magic, a newer format version, a truncated or corrupted payload)."""
    data = bytes(data)
    if len(data) < _HEADER.size or data[:4] != MAGIC:
        raise ValueError("not per-user values (no ABPU header)")
    magic, version, codec, _, n_cols, n_users, n_names = _HEADER.unpack_from(data)
    if version != VERSION:
        raise ValueError(f"per-user values in format version {version}; this ablate reads version {VERSION}")
    if codec != CODEC_ZLIB:
        raise ValueError(f"per-user values with unknown codec {codec}")
    start = _HEADER.size + n_names
    names = data[_HEADER.size:start].decode("utf-8")
    columns = tuple(names.split("\n")) if n_cols else ()
    if len(columns) != n_cols:
        raise ValueError(f"per-user values: header says {n_cols} columns, names give {len(columns)}")
    try:
        payload = zlib.decompress(data[start:])
    except zlib.error as e:
        raise ValueError(f"per-user values: corrupted payload ({e})") from None
    if len(payload) != 4 * n_users * (1 + n_cols):
        raise ValueError(f"per-user values: payload of {len(payload)} bytes, expected {4 * n_users * (1 + n_cols)}")
    users = np.frombuffer(payload, dtype="<i4", count=n_users).astype(np.int32)
    values = np.frombuffer(payload, dtype="<f4", offset=4 * n_users).reshape(n_cols, n_users).T.astype(np.float32)
    return PerUser(users=users, columns=columns, values=values)


@dataclass(frozen=True, eq=False)
class Paired:
    """A row's and the baseline's per-user values on one column, matched user by user.

    ``a[i]`` / ``b[i]``: the row's / the baseline's value of user ``users[i]``, each the
    mean over the seeds in which both runs evaluated that user (``n_seeds[i]`` of them),
    in float64. ``d = a - b`` is the per-user difference the tests use. ``users`` is
    sorted by id; ``seeds`` are the seeds the row and the baseline share.
    """

    users: np.ndarray
    a: np.ndarray
    b: np.ndarray
    n_seeds: np.ndarray
    seeds: tuple[int, ...]

    @property
    def d(self) -> np.ndarray:
        return self.a - self.b

    def __len__(self) -> int:
        return len(self.users)


def pair(row: Mapping[int, PerUser], baseline: Mapping[int, PerUser], column: str) -> Paired:
    """Match a row's runs with the baseline's (both ``{seed: PerUser}``) on ``column``.

    Runs pair only when they share a seed (the same split); within a seed, users pair by
    id over the users both runs evaluated. Each user's values are averaged over the seeds
    that paired it, so every user counts once (see the module docstring). A seed whose
    runs lack ``column`` is left out. No common seed: an empty :class:`Paired`.
    """
    return pair_columns(row, baseline, [column])[column]


def pair_columns(row: Mapping[int, PerUser], baseline: Mapping[int, PerUser],
                 columns: Sequence[str]) -> dict[str, Paired]:
    """:func:`pair` for several columns, matching each seed's users once (a table pairs
    61 rows x 6 columns: the matching, not the gathering, is what costs)."""
    aligned: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    out = {}
    for column in columns:
        seeds = tuple(sorted(s for s in row if s in baseline and column in row[s].columns and column in baseline[s].columns))
        for s in seeds:
            if s not in aligned:
                aligned[s] = _align(row[s], baseline[s])
        out[column] = _combine(
            [(aligned[s][0], row[s].column(column)[aligned[s][1]], baseline[s].column(column)[aligned[s][2]]) for s in seeds],
            seeds)
    return out


def _align(r: PerUser, b: PerUser) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(common user ids sorted, their rows in ``r``, their rows in ``b``)."""
    if np.array_equal(r.users, b.users):  # the same split evaluates the same users in the same order
        order = np.argsort(r.users, kind="stable")
        return r.users[order], order, order
    return np.intersect1d(r.users, b.users, assume_unique=True, return_indices=True)


def _combine(per_seed: list[tuple[np.ndarray, np.ndarray, np.ndarray]], seeds: tuple[int, ...]) -> Paired:
    """Per-user means over the seeds of (users, row values, baseline values) per seed."""
    if not per_seed:
        empty = np.zeros(0)
        return Paired(np.zeros(0, np.int32), empty, empty.copy(), np.zeros(0, np.int64), seeds)
    ids = [u for u, _, _ in per_seed]
    if all(np.array_equal(ids[0], u) for u in ids[1:]):  # the same users in every seed
        users = ids[0]
        a = np.mean([x.astype(np.float64) for _, x, _ in per_seed], axis=0) if len(ids) > 1 else per_seed[0][1].astype(np.float64)
        b = np.mean([y.astype(np.float64) for _, _, y in per_seed], axis=0) if len(ids) > 1 else per_seed[0][2].astype(np.float64)
        return Paired(users.astype(np.int32), a, b, np.full(len(users), len(ids), np.int64), seeds)
    users = np.unique(np.concatenate(ids))
    sum_a, sum_b, count = np.zeros(len(users)), np.zeros(len(users)), np.zeros(len(users), np.int64)
    for common, x, y in per_seed:
        at = np.searchsorted(users, common)
        sum_a[at] += x
        sum_b[at] += y
        count[at] += 1
    return Paired(users.astype(np.int32), sum_a / count, sum_b / count, count, seeds)


def stack(pairs: Sequence[Paired]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Several rows' :class:`Paired` on one user axis, for the vectorised tests.

    Returns ``(users, A, B)``: ``users`` the sorted union of their users; ``A`` and ``B``
    rows x users float64, NaN where a row did not pair that user. ``A - B`` is the matrix
    of differences :func:`ablate.report.significance.compare` takes.
    """
    if not pairs:
        return np.zeros(0, np.int32), np.zeros((0, 0)), np.zeros((0, 0))
    if all(np.array_equal(pairs[0].users, p.users) for p in pairs[1:]):  # every row paired the same users
        return pairs[0].users.copy(), np.stack([p.a for p in pairs]), np.stack([p.b for p in pairs])
    users = np.unique(np.concatenate([p.users for p in pairs])).astype(np.int32)
    a = np.full((len(pairs), len(users)), np.nan)
    b = np.full((len(pairs), len(users)), np.nan)
    for i, p in enumerate(pairs):
        at = np.searchsorted(users, p.users)
        a[i, at], b[i, at] = p.a, p.b
    return users, a, b
