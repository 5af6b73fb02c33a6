"""A cluster gets what one machine gets: fused groups and pruned searches on the real
one-node Slurm cluster of ``ci/services.sh`` (and its PostgreSQL).

* a fused sweep on Slurm: one array element trains the group; each member's numbers,
  per-user values and table equal the local fused sweep's, value for value;
* ``scontrol requeue`` of a fused job: the group trains again and each member ends once;
* ``scancel`` of a fused job: its members end interrupted, the next ``ablate run``
  trains each once more;
* ``ablate search --executor slurm``: trials are jobs, pruned ones end ``pruned`` (their
  verdicts come through the shared folder); the coordinator killed with ``kill -9`` and
  started again adopts the trials its jobs still train, and no trial trains twice; the
  same with the PostgreSQL store.

The runs are ablate's own models (SimGCL, XSimGCL), bit-repeatable on any number of CPU
threads, so a job and a local worker must agree exactly. Every wait is bounded.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from ablate.store import Store
from tests.slurm.slurm_helpers import ablate, ablate_cmd, cli, events, real_args, wait_for_event, wait_state
from tests.slurm.test_postgres import postgres_url  # noqa: F401 - the fixture, reused
from tests.specs import tiny_yaml
from tests.stored import full_metrics

pytestmark = pytest.mark.real_slurm

ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED"}

FUSED_ROWS = {
    "baselines": {"SimGCL": {"model": "SimGCL"}},
    "variants": {"cl": {"model": "SimGCL", "params": {"lambda": 0.1}}, "x": {"model": "XSimGCL"}},
}

SEARCH = tiny_yaml("psearch", epochs=6, eval_step=1, train_batch_size=2048, baselines=None,
                   variants={"bpr": {"model": "BPR"}}, search={
                       "space": {"learning_rate": {"loguniform": [1.0e-5, 1.0e-1]}}, "objective": "ndcg@10", "trials": 6,
                       "sampler": {"kind": "tpe", "seed": 1, "startup_trials": 3},
                       "pruner": {"kind": "median", "startup_trials": 2}})


def _spec(tmp_path: Path, name: str, epochs: int) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(tiny_yaml(name, epochs=epochs, eval_step=epochs, **FUSED_ROWS))
    return path


def _same(a: dict, b: dict) -> None:
    """Two stores' runs equal at full precision, metric by metric and user by user."""
    assert a and a.keys() == b.keys()
    for key in a:
        assert a[key] == b[key], key


@pytest.fixture(scope="module")
def fused_local(tmp_path_factory):
    """The fused spec's runs as one machine trains them (``--fuse 3``), 1 and 12 epochs."""
    d = tmp_path_factory.mktemp("fused-local")
    out = {}
    for epochs in (1, 12):
        spec = _spec(d, f"fz{epochs}", epochs)
        cli("run", spec, "--db", d / f"fz{epochs}.db", "--jobs", "1", "--cpu", "--fuse", "3")
        out[epochs] = full_metrics(d / f"fz{epochs}.db")
    return out


def _runs(db) -> dict:
    store = Store(str(db))
    try:
        return {r.name: r for r in store.runs()}
    finally:
        store.engine.dispose()


def test_a_fused_sweep_on_slurm_gives_the_local_fused_table(tmp_path, real_slurm, fused_local):
    spec, db, folder = _spec(tmp_path, "fz1", 1), tmp_path / "s.db", tmp_path / "shared"
    out = ablate("run", spec, "--db", db, *real_args(real_slurm, folder), "--fuse", "3", cwd=tmp_path).stdout
    assert "finished: 3 done" in out, out
    runs = _runs(db)
    assert {r.device for r in runs.values()} == {"cpu+fused3"}
    assert len({r.job_id for r in runs.values()}) == 1  # one array element trained the group
    assert all(r.attempts == 1 and r.executor == "slurm" for r in runs.values())
    _same(full_metrics(db), fused_local[1])


def test_a_requeued_fused_job_trains_its_group_again_and_each_member_ends_once(tmp_path, real_slurm, fused_local):
    spec, db, folder = _spec(tmp_path, "fz12", 12), tmp_path / "s.db", tmp_path / "shared"
    proc = subprocess.Popen(ablate_cmd("run", spec, "--db", db, *real_args(real_slurm, folder), "--fuse", "3"),
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        job = wait_for_event(folder, 1, "job")["job_id"]
        for rid in (1, 2, 3):
            wait_for_event(folder, rid, "started")
        subprocess.run(["scontrol", "requeue", job], check=True, timeout=30, capture_output=True)
        out, _ = proc.communicate(timeout=400)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0 and "finished: 3 done" in out, out
    for rid in (1, 2, 3):
        kinds = [e["type"] for e in events(folder, rid)]
        assert kinds.count("job") == 2 and kinds.count("finished") == 1, (rid, kinds)
    runs = _runs(db)
    assert {(r.status, r.attempts, r.job_id) for r in runs.values()} == {("done", 1, job)}
    _same(full_metrics(db), fused_local[12])


def test_scancel_of_a_fused_job_then_run_trains_each_member_once_more(tmp_path, real_slurm, fused_local):
    spec, db, folder = _spec(tmp_path, "fz12", 12), tmp_path / "s.db", tmp_path / "shared"
    out = ablate("run", spec, "--db", db, *real_args(real_slurm, folder), "--fuse", "3", "--no-wait", cwd=tmp_path).stdout
    assert "submitted 3 run(s) as 1 job(s)" in out, out
    job = _runs(db)["SimGCL"].job_id
    wait_for_event(folder, 1, "started")
    subprocess.run(["scancel", job], check=True, timeout=30)
    assert wait_state(job, ENDED) == "CANCELLED"
    res = cli("collect", spec, "--db", db)
    assert "3 interrupted" in res.output, res.output
    again = ablate("run", spec, "--db", db, *real_args(real_slurm, folder), "--fuse", "3", cwd=tmp_path, timeout=400)
    assert "finished: 3 done" in again.stdout, again.stdout
    runs = _runs(db)
    assert {(r.status, r.attempts) for r in runs.values()} == {("done", 2)}
    assert len({r.job_id for r in runs.values()}) == 1 and next(iter(runs.values())).job_id != job
    _same(full_metrics(db), fused_local[12])


def _search(tmp_path: Path, db, partition: str, folder: Path) -> list[str]:
    spec = tmp_path / "psearch.yaml"
    spec.write_text(SEARCH)
    return ablate_cmd("search", spec, "--db", db, "--executor", "slurm", "--partition", partition, "--gpus-per-job", "0",
                      "--array-parallelism", "2", "--time", "0:10:00", "--slurm-folder", folder)


def _trials(db) -> list:
    store = Store(str(db))
    try:
        return store.runs()
    finally:
        store.engine.dispose()


def _killed_and_resumed(tmp_path: Path, db, partition: str) -> None:
    """A search on Slurm killed (-9) while two trials train in their jobs, then started
    again: it adopts them (same jobs, answered verdicts), asks the rest, trains none twice."""
    folder = tmp_path / "shared"
    cmd = _search(tmp_path, db, partition, folder)
    proc = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            runs = _trials(db) if Path(str(db)).exists() or "://" in str(db) else []
            ended = [r for r in runs if r.status in ("done", "pruned")]
            training = [r for r in runs if r.status == "running" and r.job_id
                        and any(e["type"] == "started" for e in events(folder, r.id))]
            if len(ended) >= 2 and training:
                break
            time.sleep(0.5)
        else:
            raise AssertionError("the search never had two trials ended and one training")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    left = {r.id: r.job_id for r in _trials(db) if r.status == "running"}
    assert left  # the dead coordinator's jobs go on
    resumed = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    # adopted: those still training when it started again (one may have ended in between:
    # then its result was collected from its job's file)
    adopted = re.search(r"(\d+) still training in Slurm jobs \(adopted\)", resumed.stdout)
    assert adopted and 1 <= int(adopted.group(1)) <= len(left), resumed.stdout
    runs = _trials(db)
    assert len(runs) == 6 and {r.status for r in runs} <= {"done", "pruned"}, [(r.id, r.status) for r in runs]
    assert all(r.attempts == 1 for r in runs)  # no trial trained twice
    assert {rid: r.job_id for r in runs for rid in [r.id] if rid in left} == left  # adopted, not resubmitted
    for r in runs:
        finished = [e for e in events(folder, r.id) if e["type"] == "finished"]
        assert len(finished) == 1 and finished[0]["status"] == r.status, (r.id, finished)
    pruned = [r for r in runs if r.status == "pruned"]
    assert pruned and all(r.epoch < 5 for r in pruned)  # stopped by a verdict from the shared folder
    assert all(any(folder.glob(f"{r.id}/verdict.*")) for r in pruned)


def test_a_search_on_slurm_prunes_and_a_killed_coordinator_resumes_it(tmp_path, real_slurm):
    _killed_and_resumed(tmp_path, tmp_path / "s.db", real_slurm)


@pytest.mark.real_postgres
def test_the_same_search_with_the_postgresql_store(tmp_path, real_slurm, postgres_url):  # noqa: F811
    _killed_and_resumed(tmp_path, postgres_url, real_slurm)
