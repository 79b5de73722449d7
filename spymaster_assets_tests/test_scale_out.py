"""Scale-out on Dagster's own machinery: Postgres instance storage, a Redis broker, two
dagster-celery workers and the daemon (spymaster_assets/stack.py, deploy/dagster.yaml), the lake on
an S3-compatible server. A backfill of four tiny sessions must run on both workers and write the
same bytes as one process building the same sessions one after another on a local lake.

Needs postgresql and redis-server (Debian packages; .ci/run installs them): without them the test
fails, naming what to install — it never skips."""

import contextlib
import datetime as dt
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from spymaster_assets.lake import Lake, ObjectStoreLake, ObjectStoreSettings
from spymaster_assets.lib.calendar import trading_sessions
from spymaster_assets.stack import (
    LAYERS_COMPARED, Stack, client_of, materialize_in_process, partition_digests, submit_backfill, wait_for_backfill,
)

pytestmark = pytest.mark.stack

FIRST_SESSION = "2024-12-05"
SESSIONS = 4


def free_ports(*names: str) -> dict[str, int]:
    sockets = [socket.socket() for _ in names]
    try:
        for probe in sockets:
            probe.bind(("127.0.0.1", 0))
        return {name: probe.getsockname()[1] for name, probe in zip(names, sockets, strict=True)}
    finally:
        for probe in sockets:
            probe.close()


def test_a_backfill_runs_on_both_workers_and_writes_what_one_process_writes(tmp_path):
    sessions = [d.isoformat() for d in trading_sessions(dt.date.fromisoformat(FIRST_SESSION))[:SESSIONS]]
    stack = Stack(tmp_path / "stack", workers=2, lake="s3", ports=free_ports("postgres", "redis", "s3", "webserver"))
    began = time.monotonic()
    with ThreadPoolExecutor(1) as starter:
        # The single-process reference builds while the stack starts (its own home, a local lake).
        up = starter.submit(stack.up)
        try:
            assert materialize_in_process(tmp_path / "reference", sessions) == []
            up.result()
            started = time.monotonic() - began
            with client_of(stack) as instance:
                backfill_id = submit_backfill(instance, sessions, "scale-out test")
                outcome = wait_for_backfill(instance, backfill_id, stack.worker_pids(), timeout=900)
            env = stack.env()
            shared = ObjectStoreLake.open(env["SPYMASTER_LAKE_URI"], tmp_path / "download", ObjectStoreSettings.from_env(env))
            distributed = partition_digests(shared)
        finally:
            with contextlib.suppress(Exception):
                up.result()  # up() stops what it started if it fails; otherwise stop it all here
            stack.down(purge=True)
    print(f"stack and reference ready after {started:.0f} s; backfill of {len(sessions)} sessions in "
          f"{outcome.seconds:.0f} s, {len(outcome.runs)} runs: {[(r['partition'], r['worker']) for r in outcome.runs]}")

    assert outcome.status == "COMPLETED_SUCCESS", outcome
    assert sorted({run["partition"] for run in outcome.runs}) == sessions  # runs per session, not one range run
    assert all(run["status"] == "SUCCESS" for run in outcome.runs), outcome.runs
    assert {run["worker"] for run in outcome.runs} == {"worker1", "worker2"}, outcome.runs  # pid of RUN_START → worker

    reference = partition_digests(Lake(tmp_path / "reference" / "lake"))
    assert {key.split("/")[0] for key in reference} == set(LAYERS_COMPARED)
    assert {key.split("/date=")[1][:10] for key in reference} == set(sessions)
    assert distributed.keys() == reference.keys()
    assert [key for key in reference if distributed[key] != reference[key]] == []
