"""The MLflow store adapter, and the only module that imports mlflow. Everything goes through an explicit
MlflowClient and explicit run ids (no fluent "active run" state), so a parent run
id can travel to any worker process and jobs in one process never step on each other.
"""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import tempfile
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
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


def read_client(uri: str) -> MlflowClient:
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
    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
    for start in range(0, len(items), 1000):
        tracker.client.log_batch(run_id, metrics=items[start : start + 1000])


def set_tags(tracker: Tracker, run_id: str, tags: Mapping[str, str]) -> None:
    tracker.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


def log_artifacts(tracker: Tracker, run_id: str, local_dir: Path, artifact_path: str | None = None) -> None:
    tracker.client.log_artifacts(run_id, str(local_dir), artifact_path)


def log_artifact(tracker: Tracker, run_id: str, local_file: Path, artifact_path: str | None = None) -> None:
    tracker.client.log_artifact(run_id, str(local_file), artifact_path)


def log_image(tracker: Tracker, run_id: str, image, key: str) -> None:
    """Into the run's image view in the UI (not just the artifact tree)."""
    tracker.client.log_image(run_id, image, key=key, step=0)


def log_table(tracker: Tracker, run_id: str, rows: list[dict], artifact_file: str) -> None:
    """A JSON table the UI renders (and `mlflow.load_table` reads back)."""
    if rows:
        columns = list(dict.fromkeys(k for row in rows for k in row))
        data = {c: [row.get(c) for row in rows] for c in columns}
        tracker.client.log_table(run_id, data=data, artifact_file=artifact_file)


def log_text(tracker: Tracker, run_id: str, text: str, artifact_file: str) -> None:
    tracker.client.log_text(run_id, text, artifact_file)


def set_run_description(tracker: Tracker, run_id: str, markdown: str) -> None:
    """The run page's description box (rendered Markdown)."""
    tracker.client.set_tag(run_id, "mlflow.note.content", markdown)


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
        log_text(tracker, run_id, "".join(traceback.format_exception(error)), "error/traceback.txt")
    finally:
        finish_run(tracker, run_id, failure_status(error))


def child_runs(tracker: Tracker, parent_run_id: str) -> list:
    """Every run nested under the parent, all pages."""
    return _all_pages(tracker.client, [tracker.experiment_id], f"tags.`{TAG_PARENT}` = '{parent_run_id}'")


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


def sweep_runs(tracker: Tracker, parent_run_id: str) -> tuple[list, list]:
    """(runs nested under the parent, earlier runs the sweep reused instead of redoing)."""
    parent = tracker.client.get_run(parent_run_id)
    reused_ids = [v for k, v in sorted(parent.data.tags.items()) if k.startswith(TAG_REUSED_PREFIX)]
    return child_runs(tracker, parent_run_id), [tracker.client.get_run(i) for i in dict.fromkeys(reused_ids)]


def close_orphans(uri: str, client: MlflowClient | None = None) -> list[str]:
    """Mark KILLED the runs this machine started, in any experiment of the store, whose process
    is gone (SIGKILL, a crash or a full disk the process could not survive): without this they
    would stay RUNNING for good. Runs of other machines are left alone, and so is a store this
    process can't write. Returns the ids closed."""
    if not store_writable(uri):
        return []
    client = client or read_client(uri)
    host = socket.gethostname()
    experiments = [e.experiment_id for e in client.search_experiments()]
    running = _all_pages(
        client, experiments, f"attributes.status = 'RUNNING' and tags.`{TAG_HOST}` = '{host}'"
    )
    closed = []
    for run in filter(orphaned, running):
        reason = f"orphaned: process {run.data.tags[TAG_PID]} on {host} ended without closing this run"
        client.set_tag(run.info.run_id, "error", reason)
        _retry_while_locked(client.set_terminated, run.info.run_id, status="KILLED")
        closed.append(run.info.run_id)
    return closed


def orphaned(run) -> bool:
    """A RUNNING run started on this machine by a process that is gone."""
    pid = run.data.tags.get(TAG_PID, "")
    return (
        run.info.status == "RUNNING"
        and run.data.tags.get(TAG_HOST) == socket.gethostname()
        and pid.isdigit()
        and not _process_alive(int(pid))
    )


def store_writable(uri: str) -> bool:
    """Whether this process may write the store (a reading command closes orphans only then):
    a SQLite file and its folder writable by us; a server is assumed writable."""
    scheme = urlparse(uri).scheme
    if scheme != "sqlite":
        return scheme in ("http", "https")
    database = _sqlite_path(uri)  # access() also says no on a read-only filesystem, even to root
    return os.access(database, os.W_OK) and os.access(database.parent, os.W_OK)


def close_running_children(tracker: Tracker, parent_run_id: str, reason: str) -> list[str]:
    """Mark KILLED the parent's child runs still RUNNING once its launcher has given up: a
    launcher worker killed outright (SIGKILL, out of memory, a node lost) cannot close its own
    run, and joblib stops the other workers' jobs with it. Returns the ids closed."""
    running = [run for run in child_runs(tracker, parent_run_id) if run.info.status == "RUNNING"]
    for run in running:
        set_tags(tracker, run.info.run_id, {"error": reason[:5000]})
        finish_run(tracker, run.info.run_id, "KILLED")
    return [run.info.run_id for run in running]


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but another user's
        return True
    return True


class SweepNotFound(LookupError):
    """No sweep (or no such sweep) in the experiment; the message says what was searched."""


# Sweep ids (20261203-130101-ab12) and run ids (32 hex digits): anything else is refused before
# it reaches a search filter, where a quote would break the query.
_SWEEP_REF = re.compile(r"[A-Za-z0-9_-]{1,64}")


def check_sweep_ref(sweep: str) -> None:
    """SweepNotFound, with the expected forms, for a `--sweep` value no sweep can have."""
    if not _SWEEP_REF.fullmatch(sweep):
        raise SweepNotFound(
            f"--sweep {sweep!r} is neither a sweep id (like 20261203-130101-ab12) nor a parent run id "
            "(32 hex digits)"
        )


def find_sweep_experiment(uri: str, sweep: str | None = None) -> str | None:
    """The name of the experiment holding the sweep (the newest sweep when None), searching
    every active experiment in the store, which is only read; None when there is no such sweep."""
    if sweep:
        check_sweep_ref(sweep)
    client = read_client(uri)
    experiments = {e.experiment_id: e.name for e in client.search_experiments()}
    if not experiments:
        return None
    clauses = f"tags.`{TAG_ROLE}` = 'sweep'" + (f" and tags.`{TAG_SWEEP_ID}` = '{sweep}'" if sweep else "")
    found = client.search_runs(
        list(experiments), clauses, order_by=["attributes.start_time DESC"], max_results=1
    )
    if not found and sweep:
        try:
            found = [client.get_run(sweep)]
        except Exception:  # not a run id either
            return None
    return experiments.get(found[0].info.experiment_id) if found else None


def find_sweep(tracker: Tracker, sweep: str | None = None):
    """The parent run of a sweep: the latest by default, else by sweep id or parent run id."""
    if sweep:
        check_sweep_ref(sweep)
    found = _newest_with_tags(
        tracker, {TAG_ROLE: "sweep", **({TAG_SWEEP_ID: sweep} if sweep else {})}, max_results=1
    )
    if found:
        return found[0]
    if sweep:
        try:
            run = tracker.client.get_run(sweep)
        except Exception:
            run = None
        if run is not None and run.data.tags.get(TAG_ROLE) == "sweep":
            return run
    what = f"sweep {sweep!r} (looked for a sweep id or parent run id)" if sweep else "sweep"
    raise SweepNotFound(
        f"no {what} in experiment {tracker.experiment_name!r} at {tracker.uri}; "
        "run one with `python -m bespoke_exp -m epoch=1,2,...,10 guidance=5,7.5,10`"
    )


def recent_sweeps(tracker: Tracker, max_results: int = 50) -> list:
    """The experiment's sweep parent runs, newest first."""
    return _newest_with_tags(tracker, {TAG_ROLE: "sweep"}, max_results=max_results)


def list_artifacts(tracker: Tracker, run_id: str, folder: str) -> list[str]:
    """Paths of the files directly in a run's artifact `folder`."""
    return [a.path for a in tracker.client.list_artifacts(run_id, folder) if not a.is_dir]


def model_version_tags(tracker: Tracker, name: str, version: str) -> dict[str, str]:
    return dict(tracker.client.get_model_version(name, version).tags)


def log_dict(tracker: Tracker, run_id: str, data: dict, artifact_file: str) -> None:
    tracker.client.log_dict(run_id, data, artifact_file)


def load_dict(tracker: Tracker, run_id: str, artifact_file: str) -> dict | None:
    """A JSON artifact written by `log_dict`, or None when the run has none."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = tracker.client.download_artifacts(run_id, artifact_file, tmp)
        except Exception:  # MLflow raises several types for a missing artifact
            return None
        return json.loads(Path(path).read_text())


def load_table(tracker: Tracker, run_id: str, artifact_file: str) -> list[dict]:
    """Rows of a table written by `log_table`."""
    with tempfile.TemporaryDirectory() as tmp:
        path = tracker.client.download_artifacts(run_id, artifact_file, tmp)
        table = json.loads(Path(path).read_text())
    return [dict(zip(table["columns"], row)) for row in table["data"]]


def download_artifact(tracker: Tracker, run_id: str, artifact_path: str, destination: Path) -> Path:
    destination.mkdir(parents=True, exist_ok=True)
    return Path(tracker.client.download_artifacts(run_id, artifact_path, str(destination)))


def record_reuse(tracker: Tracker, parent_run_id: str, job_index: int, reused_run_id: str) -> None:
    """On the sweep's parent run: job `job_index` was not re-run, `reused_run_id` did its work."""
    set_tags(tracker, parent_run_id, {f"{TAG_REUSED_PREFIX}{job_index}": reused_run_id})


def register_model_version(
    tracker: Tracker, name: str, *, run_id: str, artifact_path: str, tags: Mapping[str, str]
) -> str:
    """Register `runs:/<run_id>/<artifact_path>` as a new version of `name` (created if new)."""
    client = tracker.client
    if not client.search_registered_models(f"name = '{name}'"):
        client.create_registered_model(name, description="LoRA checkpoints recommended by bespoke_exp sweeps")
    version = client.create_model_version(
        name, source=f"runs:/{run_id}/{artifact_path}", run_id=run_id, tags=tags
    )
    return str(version.version)


def alias_holder(tracker: Tracker, name: str, alias: str) -> tuple[str, dict[str, str]] | None:
    """(version, tags) of the version of `name` holding `alias`, or None."""
    try:
        version = tracker.client.get_model_version_by_alias(name, alias)
    except Exception:  # MLflow raises when no version holds the alias
        return None
    return str(version.version), dict(version.tags)


def set_alias(tracker: Tracker, name: str, alias: str, version: str) -> None:
    tracker.client.set_registered_model_alias(name, alias, version)


# --- Step-wise histories, step images and replaceable tables (the sweep's dashboard) ---------------
# MLflow can't delete metric points or images, so re-logging a sweep's dashboard (`rank --log`)
# must write only what is not there yet: these writers skip every (key, step) already present.


def run_ui_url(tracker: Tracker, run_id: str, port: int = 5000, tab: str = "model-metrics") -> str:
    """A run's page in `mlflow ui`; the "model-metrics" tab draws its metric histories and step images
    (route `/experiments/:experimentId/runs/:runUuid/:tab` in the 3.17 UI)."""
    return f"http://127.0.0.1:{port}/#/experiments/{tracker.experiment_id}/runs/{run_id}/{tab}"


def metric_steps(tracker: Tracker, run_id: str, key: str) -> set[int]:
    """The steps of `key` already logged on the run (empty when it has none)."""
    return {m.step for m in tracker.client.get_metric_history(run_id, key)}


def log_new_metric_steps(tracker: Tracker, run_id: str, histories: Mapping[str, Mapping[int, float]]) -> int:
    """Log `key -> {step: value}` histories, leaving out every (key, step) the run already has, in
    batches; returns the number of points written."""
    now = int(time.time() * 1000)
    items = []
    for key, points in histories.items():
        done = metric_steps(tracker, run_id, key)
        items += [Metric(key, float(v), now, int(s)) for s, v in sorted(points.items()) if int(s) not in done]
    for start in range(0, len(items), 1000):
        tracker.client.log_batch(run_id, metrics=items[start : start + 1000])
    return len(items)


def logged_image_steps(tracker: Tracker, run_id: str) -> set[tuple[str, int]]:
    """(key, step) of every step image on the run. MLflow 3.17 stores one as
    `images/<key, '/' as '~'>+step+<step>+timestamp+<ms>+<uuid>.png` (plus a `+compressed.webp`)."""
    found = set()
    for path in list_artifacts(tracker, run_id, "images"):
        name = path.rsplit("/", 1)[-1]
        parts = name.split("+")
        if len(parts) >= 4 and parts[1] == "step" and parts[2].lstrip("-").isdigit():
            found.add((parts[0].replace("~", "/"), int(parts[2])))
    return found


def log_step_image(tracker: Tracker, run_id: str, image, key: str, step: int) -> None:
    """One frame of the UI's image card for `key`: its slider moves through the steps."""
    tracker.client.log_image(run_id, image, key=key, step=int(step))


def replace_table(tracker: Tracker, run_id: str, rows: list[dict], artifact_file: str) -> None:
    """Like `log_table`, but a second call replaces the table instead of appending to it (MLflow's
    `log_table` appends to an existing file): the file is rewritten in the same JSON form."""
    folder, _, name = artifact_file.rpartition("/")
    if name not in {p.rsplit("/", 1)[-1] for p in list_artifacts(tracker, run_id, folder or None)}:
        log_table(tracker, run_id, rows, artifact_file)
        return
    import pandas as pd  # what MLflow writes tables with; only needed on this path

    columns = list(dict.fromkeys(k for row in rows for k in row))
    table = pd.DataFrame({c: [row.get(c) for row in rows] for c in columns})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        table.to_json(path, orient="split", index=False, date_format="iso")
        tracker.client.log_artifact(run_id, str(path), folder or None)
