"""Reading a store (what `rank` does) only reads: it never creates a store, a lock file or an
experiment, reads a colleague's read-only store, and refuses what is not a store, or a sweep id
that is no id, in one line. (The one thing `rank` writes, the closing of runs a dead process left
RUNNING, is in test_orphans.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from bespoke_exp import rank, tracking
from tests.helpers import make_sweep, read_only, tmpfs


def _rank(uri: str, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "bespoke_exp.rank", "--tracking-uri", uri, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_rank_reads_a_read_only_store_and_writes_nothing_into_it() -> None:
    with tmpfs("4m") as folder:
        uri = f"sqlite:///{folder / 'mlflow.db'}"
        code = f"from tests.helpers import make_sweep; make_sweep({uri!r})"
        subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
        before = sorted(os.listdir(folder))
        read_only(folder)
        done = _rank(uri, "--json")
        after = sorted(os.listdir(folder))
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout)["best"]["epoch"] == 2
    assert after == before and "Traceback" not in done.stderr


def test_a_mistyped_store_path_is_named_and_nothing_is_created(tmp_path, capsys) -> None:
    uri = f"sqlite:///{tmp_path / 'typo' / 'mlflow.db'}"
    assert rank.main(["--tracking-uri", uri]) == 2
    err = capsys.readouterr().err
    assert f"no MLflow tracking store at tracking.uri='{uri}'" in err
    assert not (tmp_path / "typo").exists()


def test_a_file_that_is_not_a_store_is_refused_in_one_line_and_left_as_it_was(tmp_path, capsys) -> None:
    garbage = tmp_path / "mlflow.db"
    garbage.write_bytes(os.urandom(4096))
    before = garbage.read_bytes()
    assert rank.main(["--tracking-uri", f"sqlite:///{garbage}"]) == 2
    err = capsys.readouterr().err
    assert "is not a SQLite database" in err and len(err.strip().splitlines()) == 1
    assert garbage.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db"]


def test_a_sweep_id_with_a_quote_is_refused_before_it_reaches_a_search(tracking_uri, capsys) -> None:
    make_sweep(tracking_uri)
    assert rank.main(["--tracking-uri", tracking_uri, "--sweep", "x' or '1'='1"]) == 2
    assert "--sweep \"x' or '1'='1\" is neither a sweep id" in capsys.readouterr().err


def test_reading_a_sweep_creates_no_experiment(tracking_uri, capsys) -> None:
    make_sweep(tracking_uri)
    assert rank.main(["--tracking-uri", tracking_uri, "--experiment", "nosuch"]) == 2
    assert "experiment 'nosuch' does not exist" in capsys.readouterr().err
    assert {e.name for e in tracking.read_client(tracking_uri).search_experiments()} == {"reading", "Default"}
