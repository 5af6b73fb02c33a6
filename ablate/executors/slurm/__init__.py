"""Run sweeps on a Slurm cluster through submitit, with the same store and table.

Why it is shaped like this:

* **submitit, not a scheduler of our own.** Pending runs become one Slurm job array
  (``map_array``; Slurm throttles it with ``%K`` from ``--array-parallelism``), exactly
  as Hydra's submitit launcher does. ``cluster="local"`` swaps in submitit's local
  executor — real subprocesses, the same pickled job, the same files — which is what the
  tests and a workstation dry run use.
* **Single writer.** A job never opens the store: each run appends its worker events as
  JSON lines to ``<folder>/<run_id>/events.<job_id>.jsonl`` on shared storage (one file
  per job attempt, so a requeued or resubmitted job never mixes its lines with another's).
  Only a coordinator — ``ablate run`` while it waits, or ``ablate collect`` later from any
  login node — reads those files and writes the store. SQLite is never written over NFS by
  many nodes, and a PostgreSQL URL works the same.
* **The scheduler drives it unchanged.** :class:`SlurmExecutor` implements
  :class:`~ablate.executors.base.Executor`: ``submit`` buffers claimed runs, ``poll``
  submits the buffer as one array, reads new event lines and asks submitit for job states.
  A job that ended (FAILED, CANCELLED, TIMEOUT, PREEMPTED, NODE_FAIL, or a local job whose
  process died) without its run's ``finished`` line yields a synthetic ``finished`` event
  (``interrupted``, or ``timeout``), and the next ``ablate run`` requeues the run.
* **Runs outlive their coordinator.** Claimed runs are owned by ``slurm:<sweep id>``; the
  store never calls such a run stale from heartbeats (``store.is_stale``): whether it is
  alive is the job's state, read here. Each sweep's folder, cluster kind and coordinator
  are kept in the store's ``meta`` table under that owner, so ``collect``/``cancel``/
  ``status`` find the files from any machine that sees the same store.

The package is cut along those jobs: :mod:`.jobs` (what a job runs), :mod:`.files`
(event files and job states), :mod:`.executor` (submitting and watching, for the
scheduler), :mod:`.collect` (``collect``, ``cancel``, ``status`` after the fact).
"""

from ablate.executors.slurm.collect import CollectSummary, cancel_runs, collect_runs, running_job_states, slurm_runs
from ablate.executors.slurm.executor import (
    CLUSTER_ENV, CLUSTERS, GRACE_SECONDS, OWNER_PREFIX, SlurmExecutor, cluster_from_env, default_folder,
    parse_time, submit_pending,
)
from ablate.executors.slurm.files import ACTIVE_STATES, ended_event, events_path, job_states, read_events
from ablate.executors.slurm.jobs import run_job

__all__ = [
    "ACTIVE_STATES", "CLUSTERS", "CLUSTER_ENV", "CollectSummary", "GRACE_SECONDS", "OWNER_PREFIX", "SlurmExecutor",
    "cancel_runs", "cluster_from_env", "collect_runs", "default_folder", "ended_event",
    "events_path", "job_states", "parse_time", "read_events", "run_job", "running_job_states", "slurm_runs",
    "submit_pending",
]
