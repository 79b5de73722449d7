"""The scale-out stack on one machine: session runs spread over Celery workers by Dagster itself.

    Postgres          run, event-log and schedule storage (every process sees every run)
    Redis             the Celery broker and result backend
    S3 server         the shared lake (moto's S3-compatible HTTP server; `--lake local` shares a directory)
    Celery workers    `dagster-celery` workers: each executes whole runs, one at a time
    Dagster daemon    dequeues backfill/schedule runs and launches each as a Celery task
                      (`CeleryRunLauncher`, deploy/dagster.yaml)
    webserver         optional, the UI on the same instance

Everything listens on 127.0.0.1 only; every process is started here in its own session, its pid
written under the stack directory, and stopped by that pid (`down`). Used by `make stack-up /
stack-backfill / stack-down`, the scale-out test and the scale benchmark:

    python -m spymaster_assets.stack up --dir /tmp/stack [--workers 2] [--lake s3|local] [--webserver]
    python -m spymaster_assets.stack backfill --dir /tmp/stack --start 2024-12-05 --sessions 4
    python -m spymaster_assets.stack down --dir /tmp/stack
"""

from __future__ import annotations

import datetime as dt
import glob
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DEPLOY_DIR = REPO_ROOT / "deploy"
PORTS = {"postgres": 55432, "redis": 56379, "s3": 59000, "webserver": 3800}
LAKE_BUCKET = "spymaster-lake"
# moto's server accepts any credentials; these only have to be the same in every process.
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "spymaster-stack", "AWS_SECRET_ACCESS_KEY": "spymaster-stack", "AWS_REGION": "us-east-1"}
# Processes in the order they are stopped (the reverse of starting): launchers before what they use.
STOP_ORDER = ["webserver", "daemon", "worker*", "s3", "redis"]
LAYERS_COMPARED = ("bronze", "silver", "gold")


class StackError(RuntimeError):
    """A service of the stack is missing or did not come up (what to install or where to look)."""


@dataclass(frozen=True)
class Stack:
    directory: Path  # pids, logs, postgres data, DAGSTER_HOME (dagster/), SPYMASTER_HOME (home/)
    workers: int = 2
    lake: str = "s3"  # "s3": the S3-compatible server; "local": a directory every worker sees
    ports: dict[str, int] = field(default_factory=lambda: dict(PORTS))
    synthetic_scale: str = "tiny"

    @staticmethod
    def load(directory: Path) -> Stack:
        """The stack as `up` recorded it."""
        saved = json.loads((Path(directory) / "stack.json").read_text())
        return Stack(Path(saved.pop("directory")), **saved)

    @property
    def home(self) -> Path:
        return self.directory / "home"

    @property
    def dagster_home(self) -> Path:
        return self.directory / "dagster"

    @property
    def postgres_dir(self) -> Path:
        """The cluster's directory. As root, a private one under /tmp owned by the postgres user
        (initdb refuses root, and the postgres user may not traverse the stack directory's parents)."""
        if os.geteuid() != 0:
            return self.directory / "postgres"
        return Path(tempfile.gettempdir()) / f"spymaster-postgres-{hashlib.sha1(str(self.directory).encode()).hexdigest()[:12]}"

    @property
    def lake_location(self) -> str:
        return f"s3://{LAKE_BUCKET}/lake" if self.lake == "s3" else str(self.home / "lake")

    def env(self) -> dict[str, str]:
        """What every process of the stack runs with (and what a client needs to reach it)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "SPYMASTER_"))}
        env |= {
            "SPYMASTER_HOME": str(self.home), "DAGSTER_HOME": str(self.dagster_home),
            "SPYMASTER_SOURCE": "synthetic", "SPYMASTER_SYNTHETIC_SCALE": self.synthetic_scale,
            "DAGSTER_POSTGRES_URL": f"postgresql+psycopg2://dagster@127.0.0.1:{self.ports['postgres']}/dagster",
            "DAGSTER_CELERY_BROKER_URL": f"redis://127.0.0.1:{self.ports['redis']}/0",
            "DAGSTER_CELERY_BACKEND_URL": f"redis://127.0.0.1:{self.ports['redis']}/1",
            "OMP_WAIT_POLICY": "passive", "POLARS_MAX_THREADS": os.environ.get("POLARS_MAX_THREADS", "1"),
            "PYTHONUNBUFFERED": "1",
        }
        if self.lake == "s3":
            env |= S3_CREDENTIALS | {"SPYMASTER_LAKE_URI": self.lake_location,
                                     "AWS_ENDPOINT_URL": f"http://127.0.0.1:{self.ports['s3']}"}
        return env

    # --- up / down --------------------------------------------------------------------------

    def up(self, webserver: bool = False) -> None:
        """Start every service and wait until each answers; on any failure stop what was started."""
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "stack.json").write_text(json.dumps(asdict(self) | {"directory": str(self.directory)}))
        self.home.mkdir(exist_ok=True)
        self.dagster_home.mkdir(exist_ok=True)
        template = (DEPLOY_DIR / "dagster.yaml").read_text()
        (self.dagster_home / "dagster.yaml").write_text(template.replace("@WORKERS@", str(self.workers)))
        try:
            self._start_postgres()
            self._start("redis", [_require("redis-server", "apt-get install redis-server"), "--bind", "127.0.0.1",
                                  "--port", str(self.ports["redis"]), "--save", "", "--appendonly", "no",
                                  "--dir", str(self.directory)])
            _wait(lambda: _redis_ping(self.ports["redis"]), "redis", self._log("redis"))
            if self.lake == "s3":
                self._start("s3", [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.ports["s3"])])
                _wait(lambda: _http_ok(f"http://127.0.0.1:{self.ports['s3']}/moto-api/"), "S3 server", self._log("s3"))
                self._run_python("from spymaster_assets.lake import Lake; import os; "
                                 "Lake.at(os.environ['SPYMASTER_LAKE_URI']).create_bucket()")
            # Creates the Dagster schema in Postgres once, before several processes race to.
            self._run_python("from dagster import DagsterInstance; DagsterInstance.get().dispose()")
            for number in range(1, self.workers + 1):
                self._start(f"worker{number}", [str(Path(sys.executable).with_name("celery")), "-A", "celery_app",
                                                "worker", "--pool", "solo", "--queues", "dagster",
                                                "--hostname", f"worker{number}@%h", "--loglevel", "INFO",
                                                "--without-gossip", "--without-mingle"], cwd=DEPLOY_DIR)
            self._start("daemon", [str(Path(sys.executable).with_name("dagster-daemon")), "run",
                                   "-w", str(REPO_ROOT / "workspace.yaml")])
            if webserver:
                self._start("webserver", [str(Path(sys.executable).with_name("dagster-webserver")), "-h", "127.0.0.1",
                                          "-p", str(self.ports["webserver"]), "-w", str(REPO_ROOT / "workspace.yaml")])
            for number in range(1, self.workers + 1):
                _wait(lambda n=number: " ready." in self._log(f"worker{n}").read_text(errors="replace"),
                      f"worker{number}", self._log(f"worker{number}"), timeout=600, process=self._pid(f"worker{number}"))
        except BaseException:
            self.down()
            raise

    def down(self, purge: bool = False) -> list[str]:
        """Stop every process of the stack by its recorded pid (then Postgres through pg_ctl; `purge`
        also deletes its data: runs and event logs). Returns what was stopped."""
        stopped = []
        for pattern in STOP_ORDER:
            for pid_file in sorted(self.directory.glob(f"{pattern}.pid")):
                _stop_group(int(pid_file.read_text()))
                pid_file.unlink()
                stopped.append(pid_file.stem)
        data = self.postgres_dir / "data"
        if (data / "postmaster.pid").exists():
            self._as_postgres([_postgres_bin("pg_ctl"), "stop", "-D", str(data), "-m", "fast", "-w"])
            stopped.append("postgres")
        if purge:
            shutil.rmtree(self.postgres_dir, ignore_errors=True)
        return stopped

    def _start_postgres(self) -> None:
        pg = self.postgres_dir
        data = pg / "data"
        if not (data / "PG_VERSION").exists():
            pg.mkdir(mode=0o700, exist_ok=True)
            if os.geteuid() == 0:  # initdb refuses root: the cluster belongs to the postgres user
                shutil.chown(pg, "postgres", "postgres")
            self._as_postgres([_postgres_bin("initdb"), "-D", str(data), "-U", "dagster", "--auth=trust",
                               "--encoding=UTF8", "--no-sync"])
        self._as_postgres([_postgres_bin("pg_ctl"), "start", "-D", str(data), "-w", "-t", "120",
                           "-l", str(pg / "postgres.log"),
                           "-o", f"-p {self.ports['postgres']} -c listen_addresses=127.0.0.1 "
                                 f"-c unix_socket_directories={pg} -c max_connections=200 -c fsync=off"])
        import psycopg2

        connection = psycopg2.connect(host="127.0.0.1", port=self.ports["postgres"], user="dagster", dbname="postgres")
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = 'dagster'")
            if cursor.fetchone() is None:
                cursor.execute("CREATE DATABASE dagster")
        connection.close()

    def _as_postgres(self, command: list[str]) -> None:
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, cwd="/tmp")
        if done.returncode != 0:
            raise StackError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")

    def _start(self, name: str, command: list[str], cwd: Path = REPO_ROOT) -> int:
        with open(self._log(name), "ab") as log:
            process = subprocess.Popen(command, cwd=cwd, env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        (self.directory / f"{name}.pid").write_text(str(process.pid))
        return process.pid

    def _run_python(self, code: str) -> None:
        done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=self.env(), capture_output=True, text=True)
        if done.returncode != 0:
            raise StackError(f"{code!r} failed: {done.stderr.strip()[-2000:]}")

    def _log(self, name: str) -> Path:
        return self.directory / f"{name}.log"

    def _pid(self, name: str) -> int | None:
        path = self.directory / f"{name}.pid"
        return int(path.read_text()) if path.exists() else None

    def worker_pids(self) -> dict[int, str]:
        return {self._pid(f"worker{n}"): f"worker{n}" for n in range(1, self.workers + 1)}


# --- backfills -------------------------------------------------------------------------------


def session_assets_without_as_of(graph) -> list:
    """Session-partitioned assets whose partition D needs nothing strictly before D: identity
    lineage, or a window that includes D (silver levels warm up on D-1's bars, which the backfill
    builds first). A backfill runs the sessions of these side by side, in at most two waves. As-of
    assets (stats, metric, index, models, projections: lineage to D-1 only) and everything below
    them form one chain through the sessions, and the unpartitioned assets need every session:
    both are left out."""
    selected: set = set()
    for key in graph.toposorted_asset_keys:
        node = graph.get(key)
        if not node.is_partitioned:
            continue
        edges = [(parent, graph.get_partition_mapping(key, parent)) for parent in node.parent_keys]
        if all(parent in selected and _includes_own_session(mapping) for parent, mapping in edges):
            selected.add(key)
    return sorted(selected, key=lambda key: key.to_user_string())


def _includes_own_session(mapping) -> bool:
    import dagster as dg

    if isinstance(mapping, dg.IdentityPartitionMapping):
        return True
    return isinstance(mapping, dg.TimeWindowPartitionMapping) and mapping.start_offset <= 0 == mapping.end_offset


def submit_backfill(instance, sessions: list[str], title: str) -> str:
    """An asset backfill of `session_assets_without_as_of` over `sessions`, as the UI's dialog makes
    one: the daemon launches runs per session (one, or two when a session waits for the previous
    session's bars) through the instance's run launcher. Returns its id."""
    from dagster._core.execution.backfill import PartitionBackfill
    from dagster._core.utils import make_new_backfill_id

    from .definitions import defs

    graph = defs.resolve_asset_graph()
    backfill = PartitionBackfill.from_asset_partitions(
        backfill_id=make_new_backfill_id(), asset_graph=graph, partition_names=sessions,
        asset_selection=session_assets_without_as_of(graph), backfill_timestamp=time.time(), tags={},
        dynamic_partitions_store=instance, all_partitions=False, title=title, description=None, run_config=None)
    instance.add_backfill(backfill)
    return backfill.backfill_id


@dataclass(frozen=True)
class BackfillOutcome:
    backfill_id: str
    status: str
    seconds: float
    runs: list[dict]  # per run: id, partition, status, pid of the process that ran it, worker


def wait_for_backfill(instance, backfill_id: str, worker_pids: dict[int, str], timeout: float,
                      began: float | None = None) -> BackfillOutcome:
    """Wait until the backfill and every run of it has finished; which worker ran each run is read
    from the run's RUN_START event (the pid of the process that executed it)."""
    from dagster import DagsterEventType, DagsterRunStatus, RunsFilter
    from dagster._core.execution.backfill import BulkActionStatus

    began = time.monotonic() if began is None else began
    finished = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
    while True:
        backfill = instance.get_backfill(backfill_id)
        runs = instance.get_runs(filters=RunsFilter(tags={"dagster/backfill": backfill_id}))
        done = backfill.status != BulkActionStatus.REQUESTED and all(run.status in finished for run in runs)
        if done:
            break
        if time.monotonic() - began > timeout:
            states = {run.tags.get("dagster/partition"): run.status.value for run in runs}
            raise TimeoutError(f"backfill {backfill_id} not finished after {timeout:.0f} s: {backfill.status.value}, runs {states}")
        time.sleep(1.0)
    seconds = time.monotonic() - began
    rows = []
    for run in runs:
        started = instance.get_records_for_run(run.run_id, of_type=DagsterEventType.RUN_START, limit=1).records
        pid = started[0].event_log_entry.dagster_event.pid if started else None
        stats = instance.get_run_stats(run.run_id)
        steps = instance.get_run_step_stats(run.run_id)
        rows.append({"run_id": run.run_id, "partition": run.tags.get("dagster/partition"), "status": run.status.value,
                     "pid": pid, "worker": worker_pids.get(pid), "celery_task": run.tags.get("dagster-celery/task_id"),
                     # launched (handed to Celery) → ended, and the part of it spent inside steps
                     "seconds": stats.end_time - stats.launch_time if stats.end_time and stats.launch_time else None,
                     "step_seconds": sum(step.end_time - step.start_time for step in steps
                                         if step.end_time and step.start_time)})
    return BackfillOutcome(backfill_id, backfill.status.value, seconds, sorted(rows, key=lambda r: r["partition"] or ""))


@contextmanager
def client_of(stack: Stack) -> Iterator:
    """The stack's Dagster instance, from this process (its environment is the stack's meanwhile:
    the instance reads its Postgres and Celery settings from it)."""
    from dagster import DagsterInstance

    saved = dict(os.environ)
    os.environ.update(stack.env())
    try:
        with DagsterInstance.get() as instance:
            yield instance
    finally:
        os.environ.clear()
        os.environ.update(saved)


def backfill_on(stack: Stack, sessions: list[str], timeout: float = 3600) -> BackfillOutcome:
    """Submit a backfill of `sessions` to the running stack and wait for it."""
    from . import definitions  # noqa: F401  (loaded before the clock starts: a client's start-up, not the stack's)

    with client_of(stack) as instance:
        began = time.monotonic()
        backfill_id = submit_backfill(instance, sessions, f"{len(sessions)} sessions on {stack.workers} workers")
        return wait_for_backfill(instance, backfill_id, stack.worker_pids(), timeout, began)


def materialize_in_process(home: Path, sessions: list[str], scale: str = "tiny", lake: str | None = None) -> list[str]:
    """The single-process reference: the same assets, one session after another, in
    this process against an ephemeral instance. Returns the sessions whose run failed."""
    env = {"SPYMASTER_HOME": str(home), "SPYMASTER_SOURCE": "synthetic", "SPYMASTER_SYNTHETIC_SCALE": scale}
    if lake:
        env["SPYMASTER_LAKE_URI"] = lake
    import dagster as dg

    from .definitions import build_definitions
    from .resources import resources_from_env

    defs = build_definitions(resources_from_env(env))  # only these settings, whatever this process's environment
    job = defs.resolve_implicit_global_asset_job_def()
    selection = session_assets_without_as_of(defs.resolve_asset_graph())
    failed = []
    with dg.DagsterInstance.ephemeral() as instance:
        for session in sessions:
            result = job.execute_in_process(instance=instance, asset_selection=selection, partition_key=session,
                                            raise_on_error=False,
                                            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}})
            if not result.success:
                failed.append(session)
    return failed


def partition_digests(lake, layers: tuple[str, ...] = LAYERS_COMPARED) -> dict[str, str]:
    """`layer/table/date=D/<file>` → sha256 of every file of every readable partition, the version
    id taken out of file names (it differs between any two writes of the same bytes)."""
    digests = {}
    for layer in layers:
        tables = sorted({path.parent.parent.name for path in lake.root.glob(f"{layer}/*/.versions/*")}
                        | set(_remote_tables(lake, layer)))
        for table in tables:
            for session in lake.partitions(layer, table):
                folder = lake.partition_dir(layer, table, session)
                for path in sorted(p for p in folder.rglob("*") if p.is_file()):
                    name = "part.parquet" if path.name.startswith("part-") else path.relative_to(folder).as_posix()
                    digests[f"{layer}/{table}/date={session}/{name}"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def _remote_tables(lake, layer: str) -> list[str]:
    from .lake import ObjectStoreLake

    if not isinstance(lake, ObjectStoreLake):
        return []
    return [key.rsplit("/", 1)[-1] for key in lake._table_keys(layer, None)]


# --- processes -------------------------------------------------------------------------------


def _require(program: str, install: str) -> str:
    found = shutil.which(program)
    if found is None:
        raise StackError(f"{program} not found: {install}")
    return found


def _postgres_bin(program: str) -> str:
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{program}"))  # Debian keeps them off PATH
    if candidates:
        return candidates[-1]
    return _require(program, "apt-get install postgresql")


def _wait(ready, what: str, log: Path, timeout: float = 120, process: int | None = None) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if ready():
                return
        except (OSError, ValueError):
            pass
        if process is not None and not _alive(process):
            raise StackError(f"{what} exited; last lines of {log}:\n{_tail(log)}")
        if time.monotonic() > deadline:
            raise StackError(f"{what} not ready after {timeout:.0f} s; last lines of {log}:\n{_tail(log)}")
        time.sleep(0.5)


def _tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else "(no log)"


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2):
        return True


def _redis_ping(port: int) -> bool:
    import redis

    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2).ping()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _stop_group(pid: int, timeout: float = 30) -> None:
    """SIGTERM the process group this module started (the process and its children, e.g. the
    daemon's code server), SIGKILL what is left after `timeout`."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                return
            with _reaped(pid):
                pass
            time.sleep(0.2)


@contextmanager
def _reaped(pid: int) -> Iterator[None]:
    """Reap `pid` if it is this process's child (a zombie keeps its group alive)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    yield


@contextmanager
def running(stack: Stack, webserver: bool = False, purge: bool = True) -> Iterator[Stack]:
    """The stack, up for the `with` block (tests, benchmarks); its Postgres data deleted after."""
    stack.up(webserver=webserver)
    try:
        yield stack
    finally:
        stack.down(purge=purge)


@contextmanager
def s3_server(port: int | None = None) -> Iterator[dict[str, str]]:
    """Only the S3-compatible server (tests of the object-store lake): yields the AWS_* environment
    that reaches it; stopped by pid."""
    import socket

    if port is None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
    process = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        _wait(lambda: _http_ok(f"http://127.0.0.1:{port}/moto-api/"), "S3 server", Path("/dev/null"), process=process.pid)
        yield S3_CREDENTIALS | {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
    finally:
        _stop_group(process.pid)
        process.wait(timeout=10)


# --- command line ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m spymaster_assets.stack", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="start Postgres, Redis, the S3 server, the workers and the daemon")
    up.add_argument("--workers", type=int, default=2)
    up.add_argument("--lake", choices=["s3", "local"], default="s3")
    up.add_argument("--scale", choices=["tiny", "small", "realistic"], default="tiny")
    up.add_argument("--webserver", action="store_true", help=f"also the UI on 127.0.0.1:{PORTS['webserver']}")
    backfill = sub.add_parser("backfill", help="backfill sessions on the running stack and report where each ran")
    backfill.add_argument("--start", default="2024-12-05")
    backfill.add_argument("--sessions", type=int, default=4)
    sub.add_parser("down", help="stop every process of the stack by pid")
    sub.add_parser("env", help="print the environment a client of the stack needs (export lines)")
    for command in sub.choices.values():
        command.add_argument("--dir", type=Path, default=REPO_ROOT / ".spymaster-stack")
    args = parser.parse_args(argv)
    directory = args.dir.resolve()
    if args.command == "up":
        stack = Stack(directory, workers=args.workers, lake=args.lake, synthetic_scale=args.scale)
        stack.up(webserver=args.webserver)
        print(f"stack up in {directory}: {stack.workers} workers, lake {stack.lake_location}"
              + (f", UI http://127.0.0.1:{stack.ports['webserver']}" if args.webserver else ""))
    elif args.command == "down":
        print("stopped:", ", ".join(Stack.load(directory).down()) or "nothing")
    elif args.command == "env":
        for key, value in sorted(Stack.load(directory).env().items()):
            if key.startswith(("DAGSTER_", "SPYMASTER_", "AWS_")):
                print(f"export {key}={value}")
    else:
        from .lib.calendar import trading_sessions

        sessions = [d.isoformat() for d in trading_sessions(dt.date.fromisoformat(args.start))[:args.sessions]]
        outcome = backfill_on(Stack.load(directory), sessions)
        for run in outcome.runs:
            print(f"  {run['partition']}  {run['status']:<8} on {run['worker'] or run['pid']}  run {run['run_id'][:8]}")
        print(f"backfill {outcome.backfill_id}: {outcome.status} in {outcome.seconds:.1f} s")
        if outcome.status != "COMPLETED_SUCCESS" or any(run["status"] != "SUCCESS" for run in outcome.runs):
            raise SystemExit(1)


if __name__ == "__main__":
    main()
