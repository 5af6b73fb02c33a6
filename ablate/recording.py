"""A worker's events written into the store: one function for every coordinator.

The scheduler's loop applies events as they arrive (over a local worker's pipe, or read
from a Slurm job's events file while ``ablate run`` waits); ``ablate collect`` applies a
job's file after the fact. Both go through :func:`apply`, so a run's store rows do not
depend on which way its events came. Every write is guarded by ``owner``: a coordinator
taken for dead, whose run was requeued and perhaps rerun, cannot write over the newer
attempt.
"""

from __future__ import annotations

import base64
from datetime import datetime

from ablate.messages import RESULT_FIELDS


def apply(store, ev: dict, *, owner: str, executor: str | None = None, git: str | None = None,
          started_at: datetime | None = None, stored: dict | None = None) -> bool:
    """Write one event of a run; returns False when the store refused it (the run is no
    longer ``owner``'s).

    ``started``, ``epoch``, ``valid`` and ``finished`` are written; ``progress`` and the
    rest only tell the coordinator the run is alive. ``started_at`` replaces the time of a
    ``started`` event (a Slurm job's own start time). ``stored`` (epoch -> stored Epoch
    row) makes repeated collects idempotent: an epoch stored with the same values is not
    written again.
    """
    from ablate.store import Status

    rid, kind = ev.get("run_id"), ev.get("type")
    if kind == "started":
        fields = {"device": ev.get("device"), "host": ev.get("host"), "pid": ev.get("pid"),
                  "log_path": ev.get("log_path"), "executor": executor, "git_commit": git}
        if started_at is not None:
            fields["started_at"] = started_at
        return store.mark_started(rid, owner=owner, **fields)
    if kind == "epoch":
        old = (stored or {}).get(ev["epoch"])
        if old is not None and old.losses == ev.get("losses") and old.train_seconds == ev.get("train_seconds"):
            return True
        return store.add_epoch(rid, ev["epoch"], losses=ev.get("losses"), train_seconds=ev.get("train_seconds"),
                               owner=owner)
    if kind == "valid":
        old = (stored or {}).get(ev["epoch"])
        if old is not None and old.valid_score == ev.get("valid_score") and old.valid == ev.get("valid"):
            return True
        return store.add_epoch(rid, ev["epoch"], valid_score=ev.get("valid_score"), valid=ev.get("valid"), owner=owner)
    if kind == "finished":
        fields = {k: ev[k] for k in RESULT_FIELDS if ev.get(k) is not None}
        per_user = {split: base64.b64decode(text) for split, text in (ev.get("per_user") or {}).items()}
        return store.finish(rid, Status(ev["status"]), metrics=ev.get("metrics"), error=ev.get("error"), owner=owner,
                            exact=ev.get("exact"), per_user=per_user, **fields)
    return True
