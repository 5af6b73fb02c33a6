"""Duplicate sweeps, timeouts, out-of-memory back-off, unwritable run folders, and
bit-for-bit reproducibility of a CPU run (at full precision, user by user)."""

from __future__ import annotations

import re

from typer.testing import CliRunner

from ablate import plan, spec as spec_mod
from ablate.cli import app
from ablate.executors.base import Executor
from ablate.scheduler import Sweep
from ablate.store import Store

from tests.reliability.reliability_helpers import ablate_proc, query, runs_by_name
from tests.stored import full_metrics
from tests.testmodels.cli import with_test_models


def test_two_coordinators_on_one_database_run_everything_exactly_once(make_spec, db, tmp_path):
    spec = make_spec(seeds=[1, 2, 3, 4])
    first = ablate_proc("run", str(spec), "--db", db, cwd=tmp_path)
    second = ablate_proc("run", str(spec), "--db", db, cwd=tmp_path)
    outs = [p.communicate(timeout=300) for p in (first, second)]
    for p, (out, err) in zip((first, second), outs):
        assert p.returncode == 0, (out, err)
        assert "locked" not in out + err and "Traceback" not in err, (out, err)
    assert query(db, "SELECT status, attempts, count(*) FROM runs GROUP BY status, attempts") == [("done", 1, 4)]
    assert query(db, "SELECT count(*) FROM metrics WHERE split = 'test'") == [(8,)]  # recall@10, ndcg@10 each
    done_by = [sum(int(n) for n in re.findall(r"finished: (\d+) done", out)) for out, _ in outs]
    assert sum(done_by) == 4, outs  # each run executed by exactly one coordinator
    owners = {r[0].rsplit(":", 2)[1] for r in query(db, "SELECT owner FROM runs")}
    assert owners <= {str(first.pid), str(second.pid)}


def test_timeout_stops_the_run_and_records_it(tiny_spec, db):
    """A 50-epoch run (tens of seconds here) stopped after 4 s: it ends timeout, with the
    epochs it finished stored and not the rest."""
    res = CliRunner().invoke(app, ["run", str(tiny_spec), "--db", db, "--timeout", "4", "-o", "epochs=50"])
    assert res.exit_code == 1, res.output
    [run] = runs_by_name(db).values()
    assert run["status"] == "timeout" and run["error"] == "timed out after 4 s"
    assert "finished: 1 timeout" in res.stdout
    epochs = query(db, "SELECT count(*) FROM epochs WHERE run_id = ?", run["id"])[0][0]
    assert epochs < 50 and not query(db, "SELECT 1 FROM metrics WHERE run_id = ?", run["id"])  # stopped mid-way


def test_unwritable_workdir_fails_before_any_run(tiny_spec, db, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    res = CliRunner().invoke(app, ["run", str(tiny_spec), "--db", db, "--workdir", str(blocker / "runs")])
    assert res.exit_code == 2
    assert res.stderr.splitlines() == [f"ablate: error: --workdir {blocker / 'runs'}: cannot write run logs there (Not a directory)"]
    assert query(db, "SELECT status, attempts FROM runs") == [("pending", 0)]  # nothing started


def test_cpu_run_repeats_exactly(tiny_spec, db):
    """Trained again (--force), the run stores the same numbers bit for bit: every
    unrounded metric mean, every user's values, every epoch's losses and valid score."""
    runner = CliRunner()
    assert runner.invoke(app, ["run", str(tiny_spec), "--db", db]).exit_code == 0
    [first] = full_metrics(db).values()
    losses = query(db, "SELECT epoch, losses, valid_score FROM epochs ORDER BY epoch")
    assert len(first) == 4 and all(exact > 0 for exact, _ in first.values())
    res = runner.invoke(app, ["run", str(tiny_spec), "--db", db, "--force"])
    assert res.exit_code == 0, res.output
    assert query(db, "SELECT attempts FROM runs") == [(2,)]
    assert full_metrics(db) == {query(db, "SELECT key FROM runs")[0][0]: first}  # exactly, not approx
    assert query(db, "SELECT epoch, losses, valid_score FROM epochs ORDER BY epoch") == losses


class OneGpuExecutor(Executor):
    """Stands in for a GPU this machine does not have: two slots share "GPU 0", and a run
    that starts while another is on the GPU runs out of memory (an honest fake: the
    sweep loop, claims, OOM back-off and the store are the real code)."""

    name = "fake-gpu"

    def __init__(self):
        self.slots = 2
        self.running: list[dict] = []
        self.events: list[dict] = []
        self.log: list[tuple[int, int]] = []  # (run id, runs on the GPU when it started)

    def capacity(self):
        return self.slots - len(self.running)

    def submit(self, task):
        self.running.append(dict(task, crowded=len(self.running) > 0))
        self.log.append((task["run_id"], len(self.running)))
        self.events.append({"type": "started", "run_id": task["run_id"], "device": "cuda:0", "pid": 1})

    def poll(self, timeout):
        out, self.events = self.events, []
        if not out and self.running:
            task = self.running.pop(0)
            crowded = task["crowded"]
            out.append({"type": "finished", "run_id": task["run_id"], "status": "oom" if crowded else "done",
                        "error": "CUDA out of memory" if crowded else None,
                        "metrics": None if crowded else {"test": {"recall@10": 0.25}}})
        return out

    def cancel(self, run_id, status, error):
        raise AssertionError("not used")

    def shutdown(self, kill=False):
        pass

    def shrink(self, gpu):
        if gpu != "0" or self.slots == 1:
            return False
        self.slots -= 1
        return True


def test_out_of_memory_is_recorded_and_retried_with_fewer_runs_per_gpu(make_spec, db, tmp_path):
    spec = spec_mod.load_spec(make_spec(seeds=[1, 2]))
    store = Store(db)
    ids = store.experiment_run_ids(store.sync_experiment(spec, plan.expand(spec)))
    executor = OneGpuExecutor()
    summary = Sweep(store, ids, executor, "me", tmp_path).run()
    # run 1 ran out of memory beside run 2, was requeued, and ran again alone on the GPU
    assert executor.log == [(ids[0], 1), (ids[1], 2), (ids[1], 1)]
    assert executor.slots == 1
    assert (summary.finished, summary.retried) == ({"done": 2}, 1)
    runs = {r.id: r for r in store.runs(ids)}
    assert [(runs[i].status, runs[i].attempts) for i in ids] == [("done", 1), ("done", 2)]
    assert runs[ids[1]].metric("test", "recall@10") == 0.25


class FusingGpuExecutor(OneGpuExecutor):
    """One GPU slot that takes fused groups (``{"members": [...]}``); a group of more than
    two runs does not fit in its memory: every member ends ``oom``."""

    def __init__(self):
        super().__init__()
        self.slots = 1

    def submit(self, task):
        members = task.get("members", [task])
        self.log.append(tuple(t["run_id"] for t in members))
        self.running.extend(dict(t, crowded=len(members) > 2) for t in members)
        self.events.extend({"type": "started", "run_id": t["run_id"], "device": "cuda:0", "pid": 1} for t in members)

    def capacity(self):
        return 0 if self.running else 1

    def poll(self, timeout):
        out, self.events = self.events, []
        if not out:
            while self.running:
                out.extend(OneGpuExecutor.poll(self, timeout))
        return out


def test_a_fused_group_out_of_memory_is_retried_in_groups_half_as_large(db, tmp_path):
    path = tmp_path / "fuse.yaml"
    path.write_text("name: fuse\nbase: {dataset: ml-100k, epochs: 1}\nseeds: [2020]\n"
                    "variants:\n  lr: {model: LightGCN, grid: {learning_rate: [0.001, 0.002, 0.003, 0.004]}}\n")
    spec = spec_mod.load_spec(path)
    store = Store(db)
    ids = store.experiment_run_ids(store.sync_experiment(spec, plan.expand(spec)))
    executor = FusingGpuExecutor()
    summary = Sweep(store, ids, executor, "me", tmp_path, fuse=4).run()
    assert executor.log == [tuple(ids), tuple(ids[:2]), tuple(ids[2:])]
    assert (summary.finished, summary.retried) == ({"done": 4}, 4)
    assert [(r.status, r.attempts) for r in store.runs(ids)] == [("done", 2)] * 4


def test_a_model_that_runs_out_of_memory_ends_oom_and_is_retried(make_spec, db, tmp_path):
    """A real model whose training raises torch's own OutOfMemoryError (the exception
    CUDA's allocator raises; tests/testmodels), through `ablate run`: the worker stores the
    run as oom with torch's message, not as failed; the sweep goes on with the other run,
    and the next `ablate run` retries the oom one (a CPU slot has nothing to shrink)."""
    spec = make_spec(variants={"full": {"model": "OOMBPR"}})
    first = with_test_models("run", str(spec), "--db", db, "--jobs", "1", cwd=tmp_path)
    assert first.returncode == 1, first.stdout + first.stderr
    assert "finished: 1 done, 1 oom" in first.stdout and "Traceback" not in first.stderr, first.stdout + first.stderr
    runs = runs_by_name(db)
    assert runs["BPR"]["status"] == "done"
    full = runs["full"]
    assert (full["status"], full["attempts"], full["epoch"]) == ("oom", 1, 0), full
    assert full["error"].startswith("OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 GiB."), full
    assert not query(db, "SELECT 1 FROM metrics WHERE run_id = ?", full["id"])
    log = (tmp_path / ".ablate" / "runs" / str(full["id"]) / "run.log").read_text()
    assert "torch.OutOfMemoryError: CUDA out of memory" in log  # the worker's traceback, in the run's log

    again = with_test_models("run", str(spec), "--db", db, "--jobs", "1", cwd=tmp_path)
    assert again.returncode == 1 and "1 done, 1 to run" in again.stdout, again.stdout + again.stderr
    runs = runs_by_name(db)
    assert (runs["full"]["status"], runs["full"]["attempts"], runs["BPR"]["attempts"]) == ("oom", 2, 1)
