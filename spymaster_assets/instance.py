"""Dagster instance plug-ins named in `dagster.yaml` (loaded by the webserver, the daemon and every CLI).

Dagster's `DefaultRunLauncher` starts each run as a child process of a local code server and cannot
tell the run-monitoring daemon whether that process is still alive. If the code server sees its
child die it marks the run failed itself; if the code server dies too (an out-of-memory kill of the
process tree, a `kill -9` of the daemon's process group, a reboot), nobody is left to notice: the run
stays STARTED forever and, with one run at a time, blocks every schedule, sensor and backfill.
"""

from __future__ import annotations

import psutil
from dagster._core.events import DagsterEventType
from dagster._core.launcher import CheckRunHealthResult, DefaultRunLauncher, WorkerStatus
from dagster._core.storage.dagster_run import DagsterRun

# A process's create time and the RUN_START event's timestamp come from different clocks
# (boot-relative vs wall); a second of slack keeps a live worker from being taken for a reused pid.
CREATE_TIME_SLACK_SECONDS = 1.0


def run_worker_status(pid: int, run_started_at: float) -> WorkerStatus:
    """Alive if `pid` is a running process that existed when the run started; a zombie or a
    process created after the run started (the pid was reused) is not the run worker."""
    try:
        process = psutil.Process(pid)
        alive = process.status() != psutil.STATUS_ZOMBIE
        created_at = process.create_time()
    except psutil.NoSuchProcess:
        return WorkerStatus.FAILED
    if not alive or created_at > run_started_at + CREATE_TIME_SLACK_SECONDS:
        return WorkerStatus.FAILED
    return WorkerStatus.RUNNING


class LocalProcessRunLauncher(DefaultRunLauncher):
    """`DefaultRunLauncher` that answers run monitoring's health check from the run worker's pid.

    The pid is the one that reported RUN_START (the run worker, or the `dg launch` process for
    in-process runs). Daemon and run workers share this machine with the default launcher and local
    code servers; a run whose RUN_START is not recorded yet is left to the start timeout.
    """

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        started = self._instance.get_records_for_run(
            run.run_id, of_type=DagsterEventType.RUN_START, limit=1
        ).records
        pid = started[0].event_log_entry.dagster_event.pid if started else None
        if pid is None:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "run worker pid not recorded yet")
        status = run_worker_status(pid, started[0].event_log_entry.timestamp)
        return CheckRunHealthResult(status, f"run worker pid {pid} is {status.value.lower()}", run_worker_id=str(pid))
