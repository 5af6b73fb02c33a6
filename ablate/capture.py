"""What RecBole's evaluator computes per user, kept instead of thrown away.

RecBole computes each ranking metric per user (``TopkMetric.metric_info``: users x
max(topk)), averages over the users in ``topk_result`` and rounds the mean to
``metric_decimal_place`` (4). A table of those rounded means cannot tell rows apart in
the fifth decimal, nor test a difference over users. :class:`EvaluationCapture` sits on
one trainer: for every evaluation it keeps the evaluated users (from the batches, in
evaluation order), each top-k metric's per-user matrix as ``topk_result`` receives it,
and the unrounded float64 means RecBole rounds. Nothing RecBole computes changes: the
hooks only read what passes through (the same ``metric_info`` result, the same batches).

The worker records the test evaluation and the valid evaluation of the epoch RecBole
kept as best (its checkpoint is the one tested).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ablate.peruser import PerUser, from_metric_info


@dataclass
class Evaluation:
    """One evaluation: the unrounded mean of every top-k metric RecBole reported, and the
    per-user values (None where the users could not be told: a sampled evaluation whose
    batches hold several rows per user)."""

    exact: dict[str, float]
    per_user: PerUser | None


class EvaluationCapture:
    """Reads one trainer's evaluations (see the module docstring); ``last`` is the most
    recent one."""

    def __init__(self, trainer, uid_field: str):
        from recbole.evaluator.base_metric import TopkMetric

        self.uid_field = uid_field
        self.last: Evaluation | None = None
        self._users: list[np.ndarray] = []
        self._infos: dict[str, np.ndarray] = {}
        self._topk: list[int] = []
        collector = trainer.eval_collector
        collect = collector.eval_batch_collect

        def eval_batch_collect(scores, interaction, positive_u, positive_i):
            try:
                self._users.append(interaction[self.uid_field].detach().cpu().numpy())
            except (KeyError, AttributeError, TypeError):
                self._users.append(None)
            return collect(scores, interaction, positive_u, positive_i)

        collector.eval_batch_collect = eval_batch_collect
        for name, metric in trainer.evaluator.metric_class.items():
            if isinstance(metric, TopkMetric):
                metric.topk_result = self._keeping(name, metric.topk_result)
                self._topk = list(metric.topk)
        evaluate = trainer.evaluator.evaluate

        def evaluate_and_keep(dataobject):
            self._infos = {}
            try:
                return evaluate(dataobject)
            finally:
                self.last = self._evaluation()
                self._users = []

        trainer.evaluator.evaluate = evaluate_and_keep

    def _keeping(self, name: str, topk_result):
        def keep(metric, value):
            self._infos[name] = np.asarray(value)
            return topk_result(metric, value)

        return keep

    def _evaluation(self) -> Evaluation | None:
        if not self._infos:
            return None
        exact = {}
        for name, matrix in self._infos.items():
            means = matrix.mean(axis=0)  # RecBole's own average, before it rounds
            for k in self._topk:
                exact[f"{name.lower()}@{k}"] = float(means[k - 1])
        per_user = None
        rows = next(iter(self._infos.values())).shape[0]
        if self._users and all(u is not None for u in self._users):
            users = np.concatenate(self._users)
            if len(users) == rows and len(np.unique(users)) == rows:  # one row per user: a full-sort evaluation
                per_user = from_metric_info(users, self._infos, self._topk)
        return Evaluation(exact, per_user)
