"""Runs nobody will close: left RUNNING by a process that is gone (closed by the next sweep or
`rank`, in any experiment of the store), or by launcher workers the sweep gave up on."""

from __future__ import annotations

from bespoke_exp import rank, tracking
from tests.helpers import dead_pid, make_sweep, sqlite_uri


def test_orphans_in_every_experiment_are_closed_not_only_the_sweeps_own(tmp_path) -> None:
    uri = sqlite_uri(tmp_path)
    elsewhere = tracking.connect(uri, "last-week")
    orphan = tracking.start_run(elsewhere, "sweep", tags={tracking.TAG_PID: str(dead_pid())})
    alive = tracking.start_run(elsewhere, "sweep")  # this process: still running, left alone
    tracker = tracking.connect(uri, "faults")  # what a later sweep in another experiment opens
    assert tracking.close_orphans(tracker.uri, tracker.client) == [orphan]
    assert tracker.client.get_run(orphan).info.status == "KILLED"
    assert tracker.client.get_run(alive).info.status == "RUNNING"


def test_rank_closes_the_runs_a_dead_process_left_running(tracking_uri, capsys) -> None:
    parent = make_sweep(tracking_uri, status="RUNNING", jobs=3, pid=dead_pid())
    assert rank.main(["--tracking-uri", tracking_uri]) == 0
    out, err = capsys.readouterr()
    assert f"marked KILLED 1 runs whose process is gone: {parent}" in err
    assert out.startswith("INCOMPLETE: the sweep ended KILLED with 2 of its 3 jobs finished")
    tracker = tracking.open_store(tracking_uri, "reading")
    assert tracker.client.get_run(parent).info.status == "KILLED"


def test_a_sweep_that_gave_up_on_its_workers_closes_their_running_jobs(tmp_path) -> None:
    """A launcher worker killed outright can't close its job's run: the sweep closes what is still
    RUNNING under its own parent, and nothing else."""
    tracker = tracking.connect(sqlite_uri(tmp_path), "scale-out")
    parent = tracking.start_run(tracker, "sweep", tags={tracking.TAG_ROLE: "sweep"})
    running = [tracking.start_run(tracker, f"epoch={e:02d}", parent_run_id=parent) for e in (1, 2)]
    finished, failed = (tracking.start_run(tracker, f"epoch={e:02d}", parent_run_id=parent) for e in (3, 4))
    tracking.finish_run(tracker, finished)
    tracking.fail_run(tracker, failed, RuntimeError("out of memory"))
    other_parent = tracking.start_run(tracker, "another sweep", tags={tracking.TAG_ROLE: "sweep"})
    others_job = tracking.start_run(tracker, "epoch=01", parent_run_id=other_parent)
    reason = "the JoblibLauncher gave up: " + "a worker was killed (SIGKILL). " * 300  # 9,300 characters

    assert sorted(tracking.close_running_children(tracker, parent, reason)) == sorted(running)

    client = tracker.client
    for run_id in running:
        run = client.get_run(run_id)
        assert run.info.status == "KILLED"
        assert reason.startswith(run.data.tags["error"]) and len(run.data.tags["error"]) >= 1000
    assert client.get_run(finished).info.status == "FINISHED"
    assert client.get_run(failed).data.tags["error"] == "RuntimeError: out of memory"  # its own reason kept
    assert client.get_run(failed).info.status == "FAILED"
    assert client.get_run(others_job).info.status == "RUNNING"  # another sweep's job is not ours to close
    assert client.get_run(parent).info.status == "RUNNING"  # the parent is the sweep's to close
    assert tracking.close_running_children(tracker, parent, reason) == []  # nothing left to close
