"""The MLflow store adapter, and the only module that imports mlflow. Everything goes through an explicit
MlflowClient and explicit run ids (no fluent "active run" state), so a parent run
id can travel to any worker process and jobs in one process never step on each other.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

try:
    import fcntl
except ImportError:  # Windows: no advisory file locks; concurrent first use of a new store is unguarded
    fcntl = None

# Artifact downloads happen per image in the analysis; their progress bars are noise.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

from mlflow.entities import Metric, Param, RunTag  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from bespoke_exp.tracking.interrupts import ShieldedClient  # noqa: E402

# Tags: identity of a run, queryable as tags.<name> in search filters.
TAG_SWEEP_ID = "sweep_id"
TAG_ROLE = "bespoke.role"  # "sweep" (parent) or "job" (child)
TAG_PARENT = "mlflow.parentRunId"
# On a parent run: `bespoke.reused.<job number>` = id of the earlier FINISHED run that did
# that job's exact work, so the sweep covers it without redoing or copying it.
TAG_REUSED_PREFIX = "bespoke.reused."
TAG_HOST = "bespoke.host"  # the machine and process running a run, for orphan detection
TAG_PID = "bespoke.pid"
# The parent run's record of how its sweep ran (overrides, config folders, analysis settings,
# store), which `rank` and `rescore` read to redo its analysis as it was run.
SWEEP_SETTINGS = "sweep/settings.json"
TRAINING_SETTINGS = "checkpoint/training_settings.json"  # a LoRA job's header record
MAX_PARAM_LENGTH = 6000  # MLflow's limit for a param value


class TrackingError(RuntimeError):
    """The tracking store can't be used; the message names the URI."""


def first_line(error: BaseException) -> str:
    """An error in one line: a store's errors carry the SQL statement and its parameters below."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"


@dataclass(frozen=True)
class Tracker:
    client: MlflowClient  # a ShieldedClient: a Ctrl-C never lands inside a store call
    uri: str
    experiment_id: str
    experiment_name: str

    def ui_command(self) -> str:
        return f"mlflow ui --backend-store-uri {self.uri}"

    def ui_url(self, port: int = 5000) -> str:
        # MLflow 3's UI opens experiments in GenAI mode; this view shows the nested runs table.
        return (
            f"http://127.0.0.1:{port}/#/experiments/{self.experiment_id}/runs?workflowType=machine_learning"
        )


def default_artifact_location(uri: str) -> str | None:
    """Artifacts beside a sqlite store (`.../mlflow.db` -> `.../artifacts`); a server decides its own."""
    parsed = urlparse(uri)
    if parsed.scheme == "sqlite":
        return (_sqlite_path(uri).parent / "artifacts").resolve().as_uri()
    return None


def probe_server(uri: str, timeout_s: float = 5.0) -> None:
    """An http(s) store that does not answer in seconds is down: say so now, rather than
    after MLflow's retries (about four minutes for a refused connection)."""
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout_s).close()
    except urllib.error.HTTPError:
        return  # it answered; whether it is an MLflow server is for the real request to say
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise TrackingError(
            f"cannot reach MLflow tracking server tracking.uri={uri!r} within {timeout_s:g} s: {reason}"
        ) from error


def check_sqlite_writable(uri: str, timeout_s: float = 5.0) -> None:
    """A SQLite store that can't be written fails now, in one line: without this MLflow
    retries for minutes (a new file in a read-only folder), prints pages of SQL errors (an
    existing read-only database) or waits out its busy timeouts (a database another program
    holds an exclusive lock on) before it gives up. A sweep's own writes hold the lock for
    milliseconds, so `timeout_s` only runs out on a lock that is not let go."""
    database = _sqlite_path(uri)
    try:
        with closing(sqlite3.connect(database, timeout=timeout_s, isolation_level=None)) as connection:
            # A write inside a transaction that is rolled back: the database is left as it was.
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("CREATE TABLE bespoke_write_probe (x INTEGER)")
            connection.execute("ROLLBACK")
    except (OSError, sqlite3.Error) as error:
        if "locked" in str(error):
            raise TrackingError(
                f"cannot use MLflow tracking store tracking.uri={uri!r}: the database is locked by another "
                f"program (no write for {timeout_s:g} s); close it, or point tracking.uri elsewhere"
            ) from None
        raise TrackingError(
            f"cannot use MLflow tracking store tracking.uri={uri!r}: it can't be written ({error}); "
            "point tracking.uri (or MLFLOW_TRACKING_URI) at a writable sqlite:///path/mlflow.db or a server"
        ) from None


def check_sqlite_store(uri: str) -> None:
    """An existing MLflow database, read without writing anything (not even a lock file): a
    reading command must not create a store where a path was mistyped, nor touch a colleague's."""
    database = _sqlite_path(uri)
    if not database.is_file():
        raise TrackingError(
            f"no MLflow tracking store at tracking.uri={uri!r}: {database} does not exist "
            "(check the path; a sweep creates it)"
        )
    try:
        with closing(sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True)) as connection:
            rows = connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
            tables = {row[0] for row in rows}
    except sqlite3.Error as error:
        raise TrackingError(
            f"cannot read MLflow tracking store tracking.uri={uri!r}: {database} is not a SQLite database "
            f"({error})"
        ) from None
    if not {"experiments", "runs", "alembic_version"} <= tables:
        raise TrackingError(
            f"cannot read MLflow tracking store tracking.uri={uri!r}: {database} is a SQLite database but "
            "not an MLflow store (no experiments or runs tables)"
        )


def _sqlite_path(uri: str) -> Path:
    return Path(uri[len("sqlite:///") :])


@contextmanager
def _store_setup_lock(uri: str) -> Iterator[None]:
    """One process at a time creates a new SQLite store's tables and experiments: two sweeps
    starting together on a new store otherwise both run MLflow's schema creation and one
    fails half-way. A server store serialises this itself."""
    if urlparse(uri).scheme != "sqlite" or fcntl is None:
        yield
        return
    lock = Path(f"{_sqlite_path(uri)}.lock")
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
        handle = open(lock, "a")  # held across the yield
    except OSError as error:
        raise TrackingError(
            f"cannot use MLflow tracking store tracking.uri={uri!r}: it can't be written ({error}); "
            "point tracking.uri (or MLFLOW_TRACKING_URI) at a writable sqlite:///path/mlflow.db or a server"
        ) from None
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def connect(uri: str, experiment: str, artifact_location: str | None = None) -> Tracker:
    """Open the store for writing and get (or create) the experiment; fails fast naming the URI."""
    scheme = urlparse(uri).scheme
    if scheme in ("http", "https"):
        probe_server(uri)
    with _store_setup_lock(uri):
        if scheme == "sqlite":
            check_sqlite_writable(uri)
        try:
            client = ShieldedClient(MlflowClient(tracking_uri=uri))
            experiment_id = _experiment_id(
                client, experiment, artifact_location or default_artifact_location(uri)
            )
        except TrackingError:
            raise
        except Exception as error:
            raise TrackingError(
                f"cannot use MLflow tracking store tracking.uri={uri!r} (experiment {experiment!r}): {error}"
            ) from error
    return Tracker(client=client, uri=uri, experiment_id=experiment_id, experiment_name=experiment)


def read_client(uri: str) -> ShieldedClient:
    """A client for reading an existing store: nothing is created, locked or written."""
    scheme = urlparse(uri).scheme
    if scheme in ("http", "https"):
        probe_server(uri)
    elif scheme == "sqlite":
        check_sqlite_store(uri)
    try:
        return ShieldedClient(MlflowClient(tracking_uri=uri))
    except Exception as error:
        raise TrackingError(f"cannot read MLflow tracking store tracking.uri={uri!r}: {error}") from error


def open_store(uri: str, experiment: str) -> Tracker:
    """The existing `experiment` of an existing store, for reading (see `read_client`)."""
    client = read_client(uri)
    try:
        found = client.get_experiment_by_name(experiment)
    except Exception as error:
        raise TrackingError(f"cannot read MLflow tracking store tracking.uri={uri!r}: {error}") from error
    if found is None or found.lifecycle_stage != "active":
        state = "is deleted" if found is not None else "does not exist"
        raise SweepNotFound(f"experiment {experiment!r} {state} in the tracking store {uri}")
    return Tracker(client=client, uri=uri, experiment_id=found.experiment_id, experiment_name=experiment)


class SweepNotFound(LookupError):
    """No sweep (or no such sweep) in the experiment; the message says what was searched."""


def _experiment_id(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    """The experiment's id, creating it if needed; a sweep that started at the same moment
    may create it first, which is fine."""
    found = client.get_experiment_by_name(name)
    if found is not None and found.lifecycle_stage == "deleted":
        raise TrackingError(
            f"experiment {name!r} was deleted (it is in the store's trash, id {found.experiment_id}): "
            f"restore it (`mlflow experiments restore --experiment-id {found.experiment_id}`), remove it "
            "for good (`mlflow gc`), or use another name (tracking.experiment=...)"
        )
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except Exception:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def start_run(
    tracker: Tracker,
    name: str,
    *,
    parent_run_id: str | None = None,
    params: Mapping[str, str] | None = None,
    tags: Mapping[str, str] | None = None,
) -> str:
    """Create a RUNNING run (nested under `parent_run_id` when given) and log its params.

    Every run records the host and process that run it, so a run left RUNNING by a process
    that was killed outright (SIGKILL, a lost machine) can be recognised later.
    """
    all_tags = {TAG_HOST: socket.gethostname(), TAG_PID: str(os.getpid()), **(tags or {})}
    if parent_run_id:
        all_tags[TAG_PARENT] = parent_run_id
    run = tracker.client.create_run(tracker.experiment_id, run_name=name, tags=all_tags)
    log_params(tracker, run.info.run_id, params or {})
    return run.info.run_id


def log_params(tracker: Tracker, run_id: str, params: Mapping[str, str]) -> None:
    items = [Param(k, str(v)[:MAX_PARAM_LENGTH]) for k, v in params.items()]
    for start in range(0, len(items), 100):  # log_batch takes at most 100 params
        tracker.client.log_batch(run_id, params=items[start : start + 100])


def log_metrics(tracker: Tracker, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
    """One batched write (a single sqlite write costs ~3 ms per metric)."""
    log_points(tracker, run_id, [(key, value, step) for key, value in metrics.items()])


def log_points(tracker: Tracker, run_id: str, points: Iterable[tuple[str, float, int]]) -> None:
    """(key, value, step) metric points, in batches of MLflow's 1000."""
    now = int(time.time() * 1000)
    items = [Metric(key, float(value), now, int(step)) for key, value, step in points]
    for start in range(0, len(items), 1000):
        tracker.client.log_batch(run_id, metrics=items[start : start + 1000])


def set_tags(tracker: Tracker, run_id: str, tags: Mapping[str, str]) -> None:
    tracker.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


def _retry_while_locked(call, *args, attempts: int = 6, **kwargs):
    """Run `call`, waiting out "database is locked": a SQLite store shared with a busy writer
    or reader (another sweep, a UI) must not leave a run RUNNING because its last write
    lost one race for the lock."""
    for attempt in range(attempts):
        try:
            return call(*args, **kwargs)
        except Exception as error:
            if "database is locked" not in str(error) or attempt == attempts - 1:
                raise
            time.sleep(0.5 * 2**attempt)


def finish_run(tracker: Tracker, run_id: str, status: str = "FINISHED") -> None:
    _retry_while_locked(tracker.client.set_terminated, run_id, status=status)


def failure_status(error: BaseException) -> str:
    """The state a run stopped by `error` ends in: KILLED for Ctrl-C or a kill, else FAILED."""
    return "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"


def fail_run(tracker: Tracker, run_id: str, error: BaseException) -> None:
    """FAILED (KILLED for Ctrl-C), with the message as a tag and the traceback as an artifact."""
    message = f"{type(error).__name__}: {error}"
    try:
        _retry_while_locked(set_tags, tracker, run_id, {"error": message[:5000]})
        tracker.client.log_text(run_id, "".join(traceback.format_exception(error)), "error/traceback.txt")
    finally:
        finish_run(tracker, run_id, failure_status(error))


def _all_pages(client: MlflowClient, experiment_ids: list[str], filter_string: str) -> list:
    runs, token = [], None
    while True:
        page = client.search_runs(experiment_ids, filter_string, max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def get_run(tracker: Tracker, run_id: str):
    return tracker.client.get_run(run_id)


def _newest_with_tags(tracker: Tracker, tags: Mapping[str, str], max_results: int) -> list:
    """Runs of the experiment whose tags equal `tags`, newest first."""
    clauses = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
    return tracker.client.search_runs(
        [tracker.experiment_id], clauses, order_by=["attributes.start_time DESC"], max_results=max_results
    )


def find_job_runs(tracker: Tracker, identity: Mapping[str, str]) -> list:
    """Job runs (any status) whose tags equal `identity`, newest first."""
    return _newest_with_tags(tracker, {TAG_ROLE: "job", **identity}, max_results=100)
