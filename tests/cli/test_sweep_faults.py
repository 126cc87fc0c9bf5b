"""The sweep command under faults, each reproduced against the real CLI, Hydra, MLflow store and
pipeline: bad values refused before any work, no run left RUNNING (kills, hang-ups, a full disk,
a full store, a model that can't load), and two sweeps started together kept apart."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from bespoke_exp import tracking
from tests.helpers import small_sweep_command, sqlite_uri, tmpfs


def _command(tmp_path: Path, demo_dir: Path, *overrides: str, multirun: bool = True) -> list[str]:
    return small_sweep_command(
        demo_dir,
        f"paths.root={tmp_path}",
        f"tracking.uri={sqlite_uri(tmp_path)}",
        "tracking.experiment=faults",
        "sampler.seeds=[0]",
        *overrides,
        multirun=multirun,
    )


def _runs(tmp_path: Path) -> tuple[list, list]:
    tracker = tracking.connect(sqlite_uri(tmp_path), "faults")  # takes the store's setup lock, as sweeps do
    runs = tracker.client.search_runs([tracker.experiment_id])
    parents = [r for r in runs if r.data.tags.get("bespoke.role") == "sweep"]
    return parents, [r for r in runs if r.data.tags.get("bespoke.role") == "job"]


def _run(command: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


# --- bad values, before any work ----------------------------------------------------------


@pytest.mark.slow
def test_bad_values_in_a_sweep_are_listed_one_per_line_before_any_work(tmp_path, demo_dir) -> None:
    """Swept values and shared settings alike, a non-finite number among them: one sweep command
    lists every problem and starts nothing."""
    swept = ("epoch=1,11", "guidance=-1,7.5")
    shared = ("+metrics.weights.nope=0.5", "analysis.metric=nosuch", "checkpoint.lora_scale=nan")
    done = _run(_command(tmp_path, demo_dir, *swept, *shared, "sampler.steps=0", "sampler.seeds=[]"))
    assert done.returncode == 2, done.stderr[-2000:]
    for line in (
        "epoch=11 is outside 1..10",
        "guidance=-1 must be >= 0",
        "metrics.weights.nope: no such metric",
        "analysis.metric='nosuch' is not a metric",  # the end-of-sweep analysis: checked now, too
        "checkpoint.lora_scale=nan must be a finite number",
        "sampler.steps=0 must be > 0",
        "sampler.seeds is empty",
    ):
        assert line in done.stderr
    assert "Traceback" not in done.stderr
    assert _runs(tmp_path) == ([], [])
    assert not (tmp_path / "outputs").exists()


@pytest.mark.slow
def test_a_bad_value_in_a_single_run_is_one_line_and_exit_code_2(tmp_path, demo_dir) -> None:
    done = _run(_command(tmp_path, demo_dir, "guidance=abc", multirun=False))
    assert done.returncode == 2
    assert "guidance='abc' must be a number" in done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) <= 3


# --- concurrent sweeps -----------------------------------------------------------------


@pytest.mark.slow
def test_two_sweeps_started_together_on_a_new_experiment_stay_apart(tmp_path, demo_dir) -> None:
    first = subprocess.Popen(
        _command(tmp_path, demo_dir, "epoch=1,2"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    second = subprocess.Popen(
        _command(tmp_path, demo_dir, "epoch=3,4"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    outputs = [p.communicate(timeout=600) for p in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], [err[-2000:] for _, err in outputs]
    parents, children = _runs(tmp_path)
    assert len(parents) == 2 and {p.info.status for p in parents} == {"FINISHED"}
    epochs_by_parent = {
        p.info.run_id: sorted(
            c.data.tags["epoch"] for c in children if c.data.tags["mlflow.parentRunId"] == p.info.run_id
        )
        for p in parents
    }
    assert sorted(epochs_by_parent.values()) == [["1", "2"], ["3", "4"]]
    folders = {p.data.tags["sweep_dir"] for p in parents}
    assert len(folders) == 2 and all(Path(f, "sweep.json").is_file() for f in folders)


# --- no parent run left RUNNING ------------------------------------------------------


@pytest.mark.slow
def test_an_unwritable_sweep_folder_stops_the_sweep_before_any_run(tmp_path, demo_dir) -> None:
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("")
    done = _run(_command(tmp_path, demo_dir, "epoch=1", f"hydra.sweep.dir={blocker}/sweep"))
    assert done.returncode == 2
    assert f"cannot create the sweep folder hydra.sweep.dir={blocker}/sweep" in done.stderr
    assert _runs(tmp_path) == ([], [])


@pytest.mark.slow
def test_a_kill_during_the_end_of_sweep_analysis_leaves_the_parent_killed(tmp_path, demo_dir) -> None:
    # A large bootstrap keeps the analysis busy for seconds; the parent's `sweep/jobs_finished`
    # metric is logged just before the analysis starts.
    process = subprocess.Popen(
        _command(tmp_path, demo_dir, "epoch=1,2", "analysis.n_boot=10000000"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        parents, _ = _runs(tmp_path)
        if parents and "sweep/jobs_finished" in parents[0].data.metrics:
            break
        time.sleep(0.5)  # a gentle reader: SQLite writers wait for readers
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-2000:]
    parents, _ = _runs(tmp_path)
    assert [p.info.status for p in parents] == ["KILLED"]
    assert "interrupted" in err


@pytest.mark.slow
def test_runs_left_running_by_a_killed_process_are_closed_by_the_next_sweep(tmp_path, demo_dir) -> None:
    process = subprocess.Popen(
        _command(tmp_path, demo_dir, "epoch=1,2,3,4"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        parents, children = _runs(tmp_path)
        if any(c.info.status == "RUNNING" for c in children):
            break
        time.sleep(0.5)  # a gentle reader: SQLite writers wait for readers
    os.killpg(process.pid, signal.SIGKILL)  # no handler runs: the runs stay RUNNING
    process.wait()
    parents, children = _runs(tmp_path)
    orphans = {r.info.run_id for r in parents + children if r.info.status == "RUNNING"}
    assert orphans

    done = _run(_command(tmp_path, demo_dir, "epoch=1"))
    assert done.returncode == 0, done.stderr[-2000:]
    client = MlflowClient(sqlite_uri(tmp_path))
    for run_id in orphans:
        run = client.get_run(run_id)
        assert run.info.status == "KILLED"
        assert f"orphaned: process {process.pid}" in run.data.tags["error"]


# --- a full disk --------------------------------------------------------------------


@pytest.mark.slow
def test_a_full_disk_fails_the_jobs_and_the_parent_is_closed_with_the_reason(tmp_path, demo_dir) -> None:
    with tmpfs("96k") as folder:  # room for sweep.json and a few images, not for a job's sheet
        done = _run(_command(tmp_path, demo_dir, "epoch=1,2", f"hydra.sweep.dir={folder}/sweep"))
    assert done.returncode == 1, done.stderr[-3000:]
    parents, children = _runs(tmp_path)
    assert [p.info.status for p in parents] == ["FAILED"]
    assert "No space left on device" in parents[0].data.tags["error"]
    # The first job fills the disk; the second fails in its job (a FAILED run) or, when not even
    # Hydra's own config files fit any more, before it has a run. Nothing is left RUNNING.
    assert children and all(c.info.status == "FAILED" for c in children)
    assert all("No space left on device" in c.data.tags["error"] for c in children)
    assert "jobs failed" in done.stderr or "stopped" in done.stderr


# --- a model that can't load ----------------------------------------------------------


@pytest.mark.slow
def test_a_base_model_that_cannot_load_stops_the_sweep_once(tmp_path, demo_dir) -> None:
    broken = tmp_path / "broken_model"
    broken.mkdir()
    done = _run(
        _command(tmp_path, demo_dir, "epoch=1,2,3", f"model.pretrained={broken}", "model.build_demo=false")
    )
    assert done.returncode == 1
    assert done.stderr.count(f"model.pretrained='{broken}' could not be loaded") == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    parents, children = _runs(tmp_path)
    assert [p.info.status for p in parents] == ["FAILED"]
    assert [c.info.status for c in children] == ["FAILED"]  # the first job; the others never started


# --- hang-ups, full stores ------------------------------------------------------------


@pytest.mark.slow
def test_a_closed_terminal_mid_job_leaves_the_job_and_sweep_killed(tmp_path, demo_dir) -> None:
    process = subprocess.Popen(
        _command(tmp_path, demo_dir, "epoch=1,2,3"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # the hang-up reaches the sweep only, as a closed ssh session's would
    )
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if any(c.info.status == "RUNNING" for c in _runs(tmp_path)[1]):
            break
        time.sleep(0.5)  # a gentle reader: SQLite writers wait for readers
    process.send_signal(signal.SIGHUP)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err[-3000:]
    parents, children = _runs(tmp_path)
    assert [p.info.status for p in parents] == ["KILLED"]
    assert children and "RUNNING" not in {c.info.status for c in children}
    assert "KILLED" in {c.info.status for c in children}
    assert "KILLED: KeyboardInterrupt: stopped by signal SIGHUP" in out
    assert "interrupted; parent run" in err and "marked KILLED" in err


@pytest.mark.slow
def test_a_full_store_never_claims_a_state_it_could_not_write_and_rank_closes_what_it_left(
    tmp_path, demo_dir
) -> None:
    # Room for MLflow's empty database (about 1 MB) and the first runs, not for a job's images:
    # then the store can't even record the failure.
    with tmpfs("1030k") as folder:
        uri = f"sqlite:///{folder / 'mlflow.db'}"
        command = [*_command(tmp_path, demo_dir, "epoch=1,2"), f"tracking.uri={uri}"]
        done = _run(command)
        output = done.stdout + done.stderr
        client = MlflowClient(uri)
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
        assert runs, output[-3000:]  # the sweep got as far as creating its runs
        assert done.returncode != 0
        for run in runs:
            if run.info.status == "RUNNING":  # what the full store could not take must not be claimed
                assert f"{run.info.run_id} marked" not in output
                assert f"{run.info.run_id} could not be marked" in output, output[-3000:]
        assert "RUNNING" in {r.info.status for r in runs}
        # Space freed (the user clears the disk), the next reading command closes what was left.
        subprocess.run(["rm", "-rf", str(folder / "artifacts")], check=True)
        ranked = subprocess.run(
            [sys.executable, "-m", "bespoke_exp.rank", "--tracking-uri", uri],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert "marked KILLED" in ranked.stderr, ranked.stderr[-2000:]
        statuses = {r.info.status for r in client.search_runs([r.info.experiment_id for r in runs])}
    assert "RUNNING" not in statuses and "Traceback" not in ranked.stderr
