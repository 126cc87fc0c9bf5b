"""A store that can't be used (read-only, its experiment deleted, locked by another program) is
refused in seconds with one line saying why and what to do."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time

import pytest

from bespoke_exp import tracking
from tests.helpers import read_only, sqlite_uri, tmpfs


@pytest.mark.parametrize("existing", [False, True])
def test_a_read_only_store_fails_in_seconds_with_one_line(existing: bool) -> None:
    with tmpfs("1m") as folder:
        database = folder / "mlflow.db"
        if existing:
            # A real store, made by a process that then exits (an open database keeps the mount busy).
            code = f"from bespoke_exp import tracking; tracking.connect('sqlite:///{database}', 'x')"
            subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
        read_only(folder)
        started = time.monotonic()
        with pytest.raises(tracking.TrackingError) as error:
            tracking.connect(f"sqlite:///{database}", "x")
        elapsed = time.monotonic() - started
    assert elapsed < 10, elapsed
    message = str(error.value)
    assert message.startswith(
        f"cannot use MLflow tracking store tracking.uri='sqlite:///{database}': it can't be written"
    )
    assert "\n" not in message


def test_a_deleted_experiment_of_the_same_name_is_named_with_the_way_out(tmp_path) -> None:
    tracker = tracking.connect(sqlite_uri(tmp_path), "faults")
    tracker.client.delete_experiment(tracker.experiment_id)
    with pytest.raises(tracking.TrackingError) as error:
        tracking.connect(sqlite_uri(tmp_path), "faults")
    message = str(error.value)
    assert "experiment 'faults' was deleted" in message
    assert f"mlflow experiments restore --experiment-id {tracker.experiment_id}" in message


def test_a_store_another_program_holds_locked_fails_in_seconds_saying_so(tmp_path) -> None:
    tracking.connect(sqlite_uri(tmp_path), "faults")
    holder = sqlite3.connect(tmp_path / "mlruns" / "mlflow.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    started = time.monotonic()
    try:
        with pytest.raises(tracking.TrackingError, match="the database is locked by another program"):
            tracking.connect(sqlite_uri(tmp_path), "faults")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert time.monotonic() - started < 10
