"""A run's terminal state is written whatever else is going on: a kill that lands inside a store
write, a SQLite lock another connection holds for a moment."""

from __future__ import annotations

import gc
import signal
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from mlflow.exceptions import MlflowException

from bespoke_exp import tracking
from tests.helpers import sqlite_uri


@contextmanager
def _kill_inside_a_write() -> Iterator[None]:
    """SIGTERM delivered (to a handler that raises, as the CLI's does) just after a store
    write's first INSERT, while it holds SQLite's write lock: where a Ctrl-C or a kill lands
    in a real sweep now and then."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    writes = []

    def kill_mid_write(conn, cursor, statement, *args) -> None:
        if statement.lstrip().upper().startswith(("INSERT", "UPDATE")):
            writes.append(statement)
            if len(writes) == 1:
                signal.raise_signal(signal.SIGTERM)

    def interrupt(signum, frame):
        raise KeyboardInterrupt("stopped by signal SIGTERM")

    previous = signal.signal(signal.SIGTERM, interrupt)
    event.listen(Engine, "after_cursor_execute", kill_mid_write)
    try:
        yield
    finally:
        event.remove(Engine, "after_cursor_execute", kill_mid_write)
        signal.signal(signal.SIGTERM, previous)


def test_a_kill_inside_a_store_write_lets_the_write_finish_and_the_run_be_marked_killed(tmp_path) -> None:
    tracker = tracking.connect(sqlite_uri(tmp_path), "faults")
    run_id = tracking.start_run(tracker, "sweep", tags={tracking.TAG_ROLE: "sweep"})
    # Whether the cut write's connection is collected before the next write is up to the garbage
    # collector: without it, as in the CI run that hung, the lock is never given back.
    gc.disable()
    try:
        with _kill_inside_a_write(), pytest.raises(KeyboardInterrupt):
            tracking.log_metrics(tracker, run_id, {f"loss_{i}": float(i) for i in range(20)})
        started = time.monotonic()
        tracking.fail_run(tracker, run_id, KeyboardInterrupt("stopped by signal SIGTERM"))
    finally:
        gc.enable()
    # Cut in half, the write leaves this process's own connection holding the lock: marking
    # the run takes minutes of "database is locked" retries, then fails and leaves it RUNNING.
    assert time.monotonic() - started < 10
    run = tracker.client.get_run(run_id)
    assert run.info.status == "KILLED"
    assert run.data.metrics == {f"loss_{i}": float(i) for i in range(20)}  # the write completed


@contextmanager
def _busy_handler_off(on_locked=lambda: None) -> Iterator[list[str]]:
    """Every MLflow session's SQLite busy timeout set to 0: a write that meets another
    connection's lock fails at once with "database is locked", as it does whenever SQLite skips
    its busy handler to avoid a deadlock (the case that left a killed sweep's parent RUNNING in
    CI), instead of waiting inside SQLite (MLflow's own 20 s). Yields the statements that met a
    lock; `on_locked` runs after each."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    locked: list[str] = []

    def no_wait(conn, cursor, statement, parameters, context, executemany):
        if statement.strip().lower().startswith("pragma busy_timeout"):
            statement = "PRAGMA busy_timeout = 0;"
        return statement, parameters

    def met_a_lock(context) -> None:
        if "database is locked" in str(context.original_exception):
            locked.append(context.statement)
            on_locked()

    event.listen(Engine, "before_cursor_execute", no_wait, retval=True)
    event.listen(Engine, "handle_error", met_a_lock)
    try:
        yield locked
    finally:
        event.remove(Engine, "handle_error", met_a_lock)
        event.remove(Engine, "before_cursor_execute", no_wait)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> tracking.Tracker:
    """One store for the lock tests (creating a store's tables takes a second), a new run each."""
    return tracking.connect(sqlite_uri(tmp_path_factory.mktemp("locked")), "locked")


def _lock_the_store(tracker: tracking.Tracker) -> sqlite3.Connection:
    """Another connection holding the store's write lock, as a busy writer (a sweep, a UI) does."""
    holder = sqlite3.connect(tracker.uri.removeprefix("sqlite:///"), isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    return holder


def test_a_terminal_state_waits_out_a_lock_another_connection_holds_briefly(store) -> None:
    tracker = store
    run_id = tracking.start_run(tracker, "sweep", tags={tracking.TAG_ROLE: "sweep"})
    holder = _lock_the_store(tracker)

    def let_go() -> None:  # the other writer is done as soon as the write has met its lock
        if holder.in_transaction:
            holder.execute("ROLLBACK")

    try:
        with _busy_handler_off(on_locked=let_go) as locked:
            tracking.finish_run(tracker, run_id, "KILLED")
    finally:
        holder.close()
    assert locked  # the write met the lock ...
    assert tracker.client.get_run(run_id).info.status == "KILLED"  # ... and the state was written after it


def test_a_lock_that_is_never_let_go_is_not_waited_for_forever(store, monkeypatch) -> None:
    tracker = store
    run_id = tracking.start_run(tracker, "sweep", tags={tracking.TAG_ROLE: "sweep"})
    waits: list[float] = []
    monkeypatch.setattr(time, "sleep", waits.append)  # the back-off, without the waiting
    holder = _lock_the_store(tracker)
    try:
        with _busy_handler_off() as locked, pytest.raises(MlflowException, match="database is locked"):
            tracking.finish_run(tracker, run_id, "KILLED")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert len(locked) == len(waits) + 1 >= 3  # a few tries, the last one failing ...
    assert waits == sorted(waits) and waits[0] < waits[-1]  # ... each after a longer wait ...
    assert sum(waits) < 60  # ... and not for ever: the run is left for `rank` to close
    assert tracker.client.get_run(run_id).info.status == "RUNNING"  # nothing claimed that was not written


def test_a_write_that_fails_for_another_reason_is_not_retried(store, monkeypatch) -> None:
    tracker = store
    waits: list[float] = []
    monkeypatch.setattr(time, "sleep", waits.append)
    with pytest.raises(MlflowException, match="no-such-run"):
        tracking.finish_run(tracker, "no-such-run", "KILLED")
    assert waits == []
