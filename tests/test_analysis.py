"""The analysis layer against a real MLflow store: errors that name the sweep, and the
champion alias that only moves for a better recommendation."""

import pytest

from bespoke_exp import analysis, tracking
from bespoke_exp.analysis.champion import move_alias_if_better
from bespoke_exp.generate.checkpoints import file_sha256
from tests.conftest import one_job_sweep


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


def test_the_champion_alias_moves_only_for_a_better_score_and_history_is_kept(tracker, tmp_path):
    lora = tmp_path / "lora.safetensors"
    lora.write_bytes(b"weights")
    run = tracking.start_run(tracker, "sweep")
    tracking.log_artifact(tracker, run, lora, "champion")

    def register(score):
        version = tracking.register_model_version(
            tracker, "punks", run_id=run, artifact_path="champion", tags={"score": f"{score:.6f}"}
        )
        return version, move_alias_if_better(tracker, "punks", version, score)

    assert register(0.5) == ("1", True)
    assert register(0.4) == ("2", False)
    assert register(0.6) == ("3", True)
    client = tracker.client
    assert str(client.get_model_version_by_alias("punks", "champion").version) == "3"
    assert sorted(str(v.version) for v in client.search_model_versions("name = 'punks'")) == ["1", "2", "3"]


def test_the_champion_is_the_evaluated_file_or_nothing(tracker, tmp_path, capsys):
    lora = tmp_path / "lora.safetensors"
    lora.write_bytes(b"evaluated weights")
    sweep, rec = one_job_sweep(tracker, lora, sha=file_sha256(lora), sweep_id="s-2")
    assert analysis.register_champion(sweep, rec, "punks") == "1"

    sweep, rec = one_job_sweep(
        tracker, lora, sha="0" * 64, sweep_id="s-2"
    )  # the file changed after evaluation
    assert analysis.register_champion(sweep, rec, "punks") is None
    assert "changed since run" in capsys.readouterr().out
    assert [str(v.version) for v in tracker.client.search_model_versions("name = 'punks'")] == ["1"]


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
