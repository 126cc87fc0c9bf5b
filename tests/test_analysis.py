"""The analysis layer against a real MLflow store: errors that name the sweep, and the
champion alias that only moves for a better recommendation."""

import pytest

from bespoke_exp import analysis, tracking


@pytest.fixture()
def tracker(tracking_uri):
    return tracking.connect(tracking_uri, "analysis")


def test_a_sweep_without_finished_jobs_is_refused_by_name(tracker, tracking_uri):
    parent = tracking.start_run(tracker, "sweep", tags={tracking.TAG_ROLE: "sweep", tracking.TAG_SWEEP_ID: "s-1"})
    child = tracking.start_run(tracker, "epoch=01 guidance=5", parent_run_id=parent, tags={tracking.TAG_ROLE: "job"})
    tracking.fail_run(tracker, child, RuntimeError("out of memory"))
    with pytest.raises(analysis.AnalysisError, match=f"sweep s-1 \\(parent run {parent}\\) has no FINISHED job runs"):
        analysis.load_sweep(tracking_uri=tracking_uri, experiment="analysis")
    with pytest.raises(tracking.SweepNotFound, match="no sweep 'nope'"):
        analysis.load_sweep("nope", tracking_uri=tracking_uri, experiment="analysis")


def test_the_champion_alias_moves_only_for_a_better_score_and_history_is_kept(tracker, tmp_path):
    lora = tmp_path / "lora.safetensors"
    lora.write_bytes(b"weights")
    run = tracking.start_run(tracker, "sweep")
    tracking.log_artifact(tracker, run, lora, "champion")

    def register(score):
        return tracking.register_champion(tracker, "punks", run_id=run, artifact_path="champion", score=score, tags={})

    assert register(0.5) == ("1", True)
    assert register(0.4) == ("2", False)
    assert register(0.6) == ("3", True)
    client = tracker.client
    assert str(client.get_model_version_by_alias("punks", "champion").version) == "3"
    assert sorted(str(v.version) for v in client.search_model_versions("name = 'punks'")) == ["1", "2", "3"]
