"""`rank` only reads: it never creates a store, a lock file or an experiment, reads a colleague's
read-only store, refuses what is not a store in one line, and says when the sweep it ranks is
not complete. The one thing it writes, to a store this process may write, is the closing of runs
this machine left RUNNING when their process died."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bespoke_exp import rank, tracking
from tests.conftest import read_only, tmpfs


def make_sweep(
    uri: str, *, status: str = "FINISHED", jobs: int = 2, finished: int = 2, pid: int | None = None
):
    """A sweep in the store as the sweep command leaves it: a parent run with `jobs` jobs, of which
    `finished` FINISHED (per-image tables and all); the parent `status`, RUNNING by process `pid`."""
    tracker = tracking.connect(uri, "reading")
    tags = {tracking.TAG_ROLE: "sweep", tracking.TAG_SWEEP_ID: "20261203-120000-abcd"}
    if pid is not None:
        tags[tracking.TAG_PID] = str(pid)
    parent = tracking.start_run(tracker, "sweep", params={"sweep.jobs": str(jobs)}, tags=tags)
    for epoch in range(1, finished + 1):
        job = tracking.start_run(
            tracker,
            f"epoch={epoch:02d} guidance=1.5",
            parent_run_id=parent,
            params={"checkpoint.epochs": "10", "prompts.name": "demo"},
            tags={tracking.TAG_ROLE: "job", "epoch": str(epoch), "guidance": "1.5"},
        )
        rows = [
            {"prompt_id": p, "split": "heldout", "seed": s, "score": 0.5 + 0.1 * epoch + 0.01 * s}
            for p in ("a", "b")
            for s in (0, 1)
        ]
        tracking.log_table(tracker, job, rows, "metrics/per_image.json")
        tracking.finish_run(tracker, job)
    if status != "RUNNING":
        tracking.finish_run(tracker, parent, status)
    return parent


def _rank(uri: str, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "bespoke_exp.rank", "--tracking-uri", uri, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300)


def test_rank_reads_a_read_only_store_and_writes_nothing_into_it() -> None:
    with tmpfs("4m") as folder:
        uri = f"sqlite:///{folder / 'mlflow.db'}"
        code = f"from tests.test_reading_commands import make_sweep; make_sweep({uri!r})"
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


@pytest.mark.parametrize(
    ("status", "said"),
    [
        ("RUNNING", "the sweep is still RUNNING with 2 of its 3 jobs finished"),
        ("KILLED", "the sweep ended KILLED with 2 of its 3 jobs finished"),
    ],
)
def test_rank_says_when_the_sweep_is_not_complete(tracking_uri, capsys, status: str, said: str) -> None:
    make_sweep(tracking_uri, status=status, jobs=3, pid=os.getpid())  # a live process: no orphan
    assert rank.main(["--tracking-uri", tracking_uri]) == 0
    assert capsys.readouterr().out.startswith(f"INCOMPLETE: {said}; the ranking below covers")
    assert rank.main(["--tracking-uri", tracking_uri, "--json"]) == 0
    ranked = json.loads(capsys.readouterr().out)
    assert ranked["complete"] is False and ranked["incomplete"] == said


def test_a_complete_sweep_is_ranked_without_a_caveat(tracking_uri, capsys) -> None:
    make_sweep(tracking_uri)
    assert rank.main(["--tracking-uri", tracking_uri, "--json"]) == 0
    ranked = json.loads(capsys.readouterr().out)
    assert ranked["complete"] is True and ranked["incomplete"] is None


def test_rank_closes_the_runs_a_dead_process_left_running(tracking_uri, capsys) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    parent = make_sweep(tracking_uri, status="RUNNING", jobs=3, pid=dead.pid)
    assert rank.main(["--tracking-uri", tracking_uri]) == 0
    out, err = capsys.readouterr()
    assert f"marked KILLED 1 runs whose process is gone: {parent}" in err
    assert out.startswith("INCOMPLETE: the sweep ended KILLED with 2 of its 3 jobs finished")
    tracker = tracking.open_store(tracking_uri, "reading")
    assert tracker.client.get_run(parent).info.status == "KILLED"


def test_bad_rank_options_are_one_line(tracking_uri, capsys) -> None:
    make_sweep(tracking_uri)
    for options, said in (
        (["--n-boot", "0"], "'0' must be an integer >= 100"),
        (["--metric", "no/such"], "'no/such' is not a metric"),
    ):
        with pytest.raises(SystemExit) as exit_:
            rank.main(["--tracking-uri", tracking_uri, *options])
        assert exit_.value.code == 2 and said in capsys.readouterr().err


def test_reading_a_sweep_creates_no_experiment(tracking_uri, capsys) -> None:
    make_sweep(tracking_uri)
    assert rank.main(["--tracking-uri", tracking_uri, "--experiment", "nosuch"]) == 2
    assert "experiment 'nosuch' does not exist" in capsys.readouterr().err
    assert {e.name for e in tracking.read_client(tracking_uri).search_experiments()} == {"reading", "Default"}
