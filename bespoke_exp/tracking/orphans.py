"""Runs nobody will close: a process killed outright (SIGKILL, out of memory, a lost machine, a
full disk it could not record its failure on) leaves its runs RUNNING for good. The next sweep,
or `rank`, on the same machine marks them KILLED; a launcher that gave up on its workers marks
their jobs KILLED under the sweep's parent."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

from bespoke_exp.tracking.interrupts import ShieldedClient
from bespoke_exp.tracking.store import (
    TAG_HOST,
    TAG_PID,
    Tracker,
    _all_pages,
    _retry_while_locked,
    _sqlite_path,
    finish_run,
    read_client,
    set_tags,
)
from bespoke_exp.tracking.sweeps import child_runs


def close_orphans(uri: str, client: ShieldedClient | None = None) -> list[str]:
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
