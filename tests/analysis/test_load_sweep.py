"""Loading a sweep from a real MLflow store: a sweep without a FINISHED job is refused by name,
and the latest sweep that has one is found."""

import pytest

from bespoke_exp import analysis, tracking


@pytest.fixture()
def tracker(tracking_uri):
    return tracking.connect(tracking_uri, "analysis")


def test_a_sweep_without_finished_jobs_is_refused_by_name(tracker, tracking_uri):
    parent = tracking.start_run(
        tracker, "sweep", tags={tracking.TAG_ROLE: "sweep", tracking.TAG_SWEEP_ID: "s-1"}
    )
    child = tracking.start_run(
        tracker, "epoch=01 guidance=5", parent_run_id=parent, tags={tracking.TAG_ROLE: "job"}
    )
    tracking.fail_run(tracker, child, RuntimeError("out of memory"))
    with pytest.raises(
        analysis.AnalysisError, match=f"sweep s-1 \\(parent run {parent}\\) has no FINISHED job runs"
    ):
        analysis.load_sweep(tracking_uri=tracking_uri, experiment="analysis")
    with pytest.raises(tracking.SweepNotFound, match="no sweep 'nope'"):
        analysis.load_sweep("nope", tracking_uri=tracking_uri, experiment="analysis")


def test_the_latest_sweep_without_a_finished_job_is_skipped_and_named(tracker, tracking_uri, capsys):
    older = tracking.start_run(
        tracker, "sweep", tags={tracking.TAG_ROLE: "sweep", tracking.TAG_SWEEP_ID: "s-old"}
    )
    job = tracking.start_run(
        tracker, "epoch=01 guidance=5", parent_run_id=older, tags={"epoch": "1", "guidance": "5"}
    )
    tracking.log_table(tracker, job, [{"prompt_id": "p", "seed": 0, "score": 0.4}], "metrics/per_image.json")
    tracking.finish_run(tracker, job)
    newer = tracking.start_run(
        tracker, "sweep", tags={tracking.TAG_ROLE: "sweep", tracking.TAG_SWEEP_ID: "s-new"}
    )
    tracking.fail_run(
        tracker, tracking.start_run(tracker, "epoch=02", parent_run_id=newer), RuntimeError("oom")
    )

    sweep = analysis.load_sweep(tracking_uri=tracking_uri, experiment="analysis")
    assert sweep.sweep_id == "s-old"
    assert f"skipped sweep s-new (parent run {newer}) has no FINISHED job runs" in capsys.readouterr().err
