"""Parallel sweeps: Hydra's joblib and submitit launchers, every worker reporting to one real
`mlflow server`; a parallel launcher on a SQLite file refused; a worker's job killed mid-run."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.helpers import small_sweep_command

JOBLIB = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
# Four jobs: two epochs x two guidance values, each three prompts x one seed, 2 steps, 192 px.
GRID = ("epoch=1,2", "guidance=5,7.5")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> str:
    """A real tracking server: SQLite backend, artifacts proxied into a temporary folder."""
    root = tmp_path_factory.mktemp("server")
    port = _free_port()
    command = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination",
        str(root / "artifacts"),
    ]
    url = f"http://127.0.0.1:{port}"
    with open(root / "server.log", "wb") as log:
        # Own session: the server's uvicorn children are stopped with it, by its group id.
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _wait_healthy(url, process, root / "server.log")
            yield url
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _wait_healthy(url: str, process: subprocess.Popen, log: Path, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow server exited {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2).close()
            return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"mlflow server not healthy after {timeout_s} s:\n{log.read_text()[-3000:]}")


def _command(tmp_path, demo_dir, uri, experiment, *overrides, sweep_dir="sweep") -> list[str]:
    return small_sweep_command(
        demo_dir,
        "tracking=server",
        f"tracking.uri={uri}",
        f"tracking.experiment={experiment}",
        f"hydra.sweep.dir={tmp_path / sweep_dir}",
        "sampler.seeds=[0]",
        *GRID,
        *overrides,
    )


def _runs(uri: str, experiment: str) -> tuple[MlflowClient, list, list]:
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id], max_results=1000) if found else []
    parents = [r for r in runs if r.data.tags.get("bespoke.role") == "sweep"]
    children = [r for r in runs if r.data.tags.get("bespoke.role") == "job"]
    return client, parents, children


def _assert_complete_sweep(uri: str, experiment: str) -> None:
    """One FINISHED parent holding the report; four FINISHED children under it, each with
    its scores and images, all read back through the server."""
    client, parents, children = _runs(uri, experiment)
    assert len(parents) == 1
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert client.list_artifacts(parent.info.run_id, "report"), "no report on the parent"
    assert len(children) == 4
    assert {(r.data.tags["epoch"], r.data.tags["guidance"]) for r in children} == {
        ("1", "5"),
        ("1", "7.5"),
        ("2", "5"),
        ("2", "7.5"),
    }
    pids = set()
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.metrics, f"child {child.info.run_name} has no metrics"
        images = [a.path for a in client.list_artifacts(child.info.run_id, "images")]
        assert len([p for p in images if p.endswith("seed0.png")]) == 3, images
        pids.add(child.data.tags["bespoke.pid"])
    # The jobs really ran outside the launching process (which created the parent).
    assert parent.data.tags["bespoke.pid"] not in pids


@pytest.mark.slow
def test_joblib_workers_report_to_one_server(tmp_path, demo_dir, server) -> None:
    command = _command(
        tmp_path, demo_dir, server, "joblib", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"
    )
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    _assert_complete_sweep(server, "joblib")
    # Loky workers stay alive between jobs: the base pipeline is loaded once per worker (two),
    # not once per job (four).
    assert done.stderr.count("loading base pipeline") + done.stdout.count("loading base pipeline") <= 2


@pytest.mark.slow
def test_submitit_local_jobs_report_to_one_server(tmp_path, demo_dir, server) -> None:
    command = _command(
        tmp_path,
        demo_dir,
        server,
        "submitit",
        "hydra/launcher=submitit_local",
        "hydra.launcher.timeout_min=10",
    )
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    _assert_complete_sweep(server, "submitit")


@pytest.mark.slow
def test_parallel_launcher_on_a_sqlite_file_is_refused(tmp_path, demo_dir) -> None:
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    command = _command(tmp_path, demo_dir, uri, "refused", "hydra/launcher=joblib")
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "the JoblibLauncher launcher runs jobs in parallel processes" in done.stderr
    assert "mlflow server" in done.stderr
    assert not (tmp_path / "sweep" / "sweep.json").exists()  # no parent run was created


@pytest.mark.slow
def test_a_killed_job_is_killed_on_record_and_the_rerun_redoes_only_it(tmp_path, demo_dir, server) -> None:
    # Longer jobs, so the SIGTERM lands while the job's run is still generating.
    slow = ("hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "sampler.steps=12")
    first = subprocess.Popen(
        _command(tmp_path, demo_dir, server, "killed", *slow, sweep_dir="first"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        victim = _kill_first_running_job(server, "killed")
        out, _ = first.communicate(timeout=600)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 1, out[-3000:]
    _, parents, children = _runs(server, "killed")
    by_id = {r.info.run_id: r for r in children}
    assert by_id[victim].info.status == "KILLED"
    assert "SIGTERM" in by_id[victim].data.tags["error"]
    assert sorted(r.info.status for r in children) == ["FINISHED"] * 3 + ["KILLED"]
    assert [p.info.status for p in parents] == ["FAILED"]

    rerun = subprocess.run(
        _command(tmp_path, demo_dir, server, "killed", *slow, sweep_dir="second"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    _, parents, children = _runs(server, "killed")
    redone = [r for r in children if r.info.run_id not in by_id]
    assert len(redone) == 1  # only the killed cell ran again; the other three were reused
    assert redone[0].info.status == "FINISHED"
    cell = ("epoch", "guidance")
    assert [redone[0].data.tags[k] for k in cell] == [by_id[victim].data.tags[k] for k in cell]
    assert rerun.stdout.count("SKIPPED") == 3


def _kill_first_running_job(uri: str, experiment: str, timeout_s: float = 300) -> str:
    """SIGTERM the worker process of the first job run seen RUNNING; returns that run's id."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _, _, children = _runs(uri, experiment)
        running = [r for r in children if r.info.status == "RUNNING"]
        if running:
            os.kill(int(running[0].data.tags["bespoke.pid"]), signal.SIGTERM)
            return running[0].info.run_id
        time.sleep(0.5)  # a gentle reader: SQLite writers wait for readers
    raise AssertionError("no job run became RUNNING")
