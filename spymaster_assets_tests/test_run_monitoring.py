"""The shipped dagster.yaml recovers from runs killed with SIGKILL.

A real `dagster-daemon` on a temporary DAGSTER_HOME (with the shipped dagster.yaml, unchanged) runs
a tiny code location whose job naps when tagged `nap`. Two crashes are staged, one after the other:

1. only the run worker is killed (the out-of-memory killer's usual victim): its code server reports
   the run failed at once, and run retries re-execute it;
2. the run worker *and* the code server that launched it are killed (a crash of the process tree:
   nobody is left to report the run). Run monitoring must mark it FAILURE within a minute.

After both, a plain run queued behind them must start and succeed: the one-run queue is free again.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dagster as dg
import psutil
import pytest
from dagster._core.events import DagsterEventType
from dagster._core.storage.tags import PARENT_RUN_ID_TAG

from spymaster_assets.resources import REPO_ROOT

pytestmark = pytest.mark.slow

# A sensor queues the runs (a `dagster job launch` per run costs ~20 s on a busy machine).
# A run tagged `nap` sleeps long enough to be killed mid-step and leaves a marker when it starts to;
# its retry (which has a parent run) and untagged runs return at once.
LOCATION = textwrap.dedent(
    '''
    import os
    import time
    from pathlib import Path

    import dagster as dg


    @dg.op
    def nap(context: dg.OpExecutionContext):
        if "nap" in context.run.tags and context.run.parent_run_id is None:
            (Path(os.environ["NAP_MARKERS"]) / context.run_id).touch()
            time.sleep(600)


    @dg.job(executor_def=dg.in_process_executor)
    def nap_job():
        nap()


    @dg.sensor(job=nap_job, minimum_interval_seconds=1, default_status=dg.DefaultSensorStatus.RUNNING)
    def queue_the_cases():
        """Queue the three runs once (run keys), in this order: the queue releases them one at a time."""
        for case in ("worker_killed", "tree_killed", "plain"):
            yield dg.RunRequest(run_key=case, tags={"case": case} | ({"nap": "1"} if case != "plain" else {}))


    defs = dg.Definitions(jobs=[nap_job], sensors=[queue_the_cases])
    '''
)

# The brief's promise to the operator: a killed run stops blocking the queue within a minute.
FAILED_WITHIN_SECONDS = 60


def wait_for(predicate, timeout: float, what: str, interval: float = 1.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def run_worker_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    records = instance.get_records_for_run(run_id, of_type=DagsterEventType.RUN_START, limit=1).records
    return records[0].event_log_entry.dagster_event.pid if records else None


def event_messages(instance: dg.DagsterInstance, run_id: str) -> str:
    return "\n".join(entry.message for entry in instance.all_logs(run_id) if entry.message)


def status_of(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRunStatus:
    return instance.get_run_by_id(run_id).status


def retry_of(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRun | None:
    retries = instance.get_runs(dg.RunsFilter(tags={PARENT_RUN_ID_TAG: run_id}))
    return retries[0] if retries else None


def test_killed_runs_fail_within_a_minute_and_free_the_queue(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    location = tmp_path / "nap_location.py"
    location.write_text(LOCATION)
    markers = tmp_path / "napping"
    markers.mkdir()
    env = os.environ | {"DAGSTER_HOME": str(home), "NAP_MARKERS": str(markers)}
    bin_dir = Path(sys.executable).parent

    def run_of_case(case: str) -> str:
        runs = wait_for(lambda: instance.get_runs(dg.RunsFilter(tags={"case": case})), 90, f"run {case} to be queued")
        return runs[-1].run_id

    def napping_worker(run_id: str) -> psutil.Process:
        wait_for(lambda: (markers / run_id).exists(), 120, f"run {run_id} to start its nap")
        return psutil.Process(run_worker_pid(instance, run_id))

    def wait_until_finished(run_id: str, timeout: float) -> dg.DagsterRun:
        return wait_for(lambda: (run := instance.get_run_by_id(run_id)).is_finished and run, timeout, f"run {run_id}")

    # Storage is created here, before any other process opens it (concurrent first use of a
    # SQLite DAGSTER_HOME races on its schema migration).
    with dg.DagsterInstance.from_config(str(home)) as instance:
        daemon = subprocess.Popen([bin_dir / "dagster-daemon", "run", "-f", location], env=env, cwd=REPO_ROOT,
                                  stdout=subprocess.DEVNULL, stderr=open(tmp_path / "daemon.log", "wb"))
        try:
            worker_killed, tree_killed, plain = (run_of_case(c) for c in ("worker_killed", "tree_killed", "plain"))
            # 1. Only the run worker dies: the code server reports it, the run is retried.
            napping_worker(worker_killed).kill()
            run = wait_until_finished(worker_killed, FAILED_WITHIN_SECONDS)
            assert run.status == dg.DagsterRunStatus.FAILURE
            assert status_of(instance, plain) == dg.DagsterRunStatus.QUEUED  # one run at a time
            retry = wait_for(lambda: retry_of(instance, worker_killed), 60, "the retry to be queued")

            # 2. The run worker and its code server die together: only run monitoring can tell.
            worker = napping_worker(tree_killed)
            code_server = worker.parent()
            assert "dagster" in " ".join(code_server.cmdline())
            worker.kill()
            code_server.kill()
            killed_at = time.monotonic()
            run = wait_until_finished(tree_killed, FAILED_WITHIN_SECONDS)
            print(f"run monitoring marked the killed run {run.status.value} after {time.monotonic() - killed_at:.1f} s")
            assert run.status == dg.DagsterRunStatus.FAILURE
            assert "Detected run worker status FAILED" in event_messages(instance, tree_killed)

            # The queue moves on once the daemon has restarted the code server (within ~70 s).
            run = wait_until_finished(plain, 150)
            print(f"the queued run finished {time.monotonic() - killed_at:.1f} s after the kill")
            assert run.status == dg.DagsterRunStatus.SUCCESS, event_messages(instance, plain)
            retry = wait_until_finished(retry.run_id, 60)
            assert retry.status == dg.DagsterRunStatus.SUCCESS, event_messages(instance, retry.run_id)
        finally:
            children = psutil.Process(daemon.pid).children(recursive=True)
            daemon.terminate()
            try:
                daemon.wait(timeout=30)
            except subprocess.TimeoutExpired:
                daemon.kill()
            for child in children:
                if child.is_running():
                    child.kill()
