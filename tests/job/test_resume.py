"""Nothing already paid for is redone: identical FINISHED jobs are skipped, and images a
crashed attempt left intact on disk are reused. Real runs against a real MLflow store."""

from mlflow.tracking import MlflowClient
from omegaconf import open_dict

from bespoke_exp import tracking
from bespoke_exp.job.run import SweepContext, run_job


def test_identical_finished_job_is_skipped_and_recorded_on_the_new_parent(small_cfg, tmp_path):
    first = run_job(small_cfg, output_dir=tmp_path / "a")
    tracker = tracking.connect(small_cfg.tracking.uri, small_cfg.tracking.experiment)
    parent = tracking.start_run(tracker, "second sweep")
    again = run_job(small_cfg, output_dir=tmp_path / "b", sweep=SweepContext("s2", parent, 1, job_index=0))
    assert again.status == "SKIPPED" and again.run_id == first.run_id
    assert not (tmp_path / "b" / "images").exists()
    children, reused = tracking.sweep_runs(tracker, parent)
    assert children == [] and [r.info.run_id for r in reused] == [first.run_id]

    with open_dict(small_cfg):
        small_cfg.force = True
    forced = run_job(small_cfg, output_dir=tmp_path / "c")
    assert forced.status == "FINISHED" and forced.run_id != first.run_id


def test_other_settings_are_not_skipped(small_cfg, tmp_path):
    first = run_job(small_cfg, output_dir=tmp_path / "a")
    with open_dict(small_cfg):
        small_cfg.guidance = 5.0
    other = run_job(small_cfg, output_dir=tmp_path / "b")
    assert other.status == "FINISHED" and other.run_id != first.run_id


def _crash_after_generation(cfg, output_dir) -> str:
    """A job that generated everything and then died: its run is not FINISHED."""
    result = run_job(cfg, output_dir=output_dir)
    MlflowClient(cfg.tracking.uri).set_terminated(result.run_id, status="FAILED")
    return result.run_id


def test_images_of_a_crashed_attempt_are_reused_when_intact(small_cfg, tmp_path, capsys):
    crashed = _crash_after_generation(small_cfg, tmp_path / "a")
    resumed = run_job(small_cfg, output_dir=tmp_path / "b")
    out = capsys.readouterr().out
    assert f"earlier attempt {crashed} (FAILED): reusing images" in out
    assert resumed.status == "FINISHED" and resumed.run_id != crashed
    client = MlflowClient(small_cfg.tracking.uri)
    metrics = client.get_run(resumed.run_id).data.metrics
    assert "time/generate_s" not in metrics  # not regenerated ...
    # ... but scored, and the same images score as the crashed attempt scored them.
    assert metrics["score"] == client.get_run(crashed).data.metrics["score"]
    assert metrics["by_prompt/basic/score"] == client.get_run(crashed).data.metrics["by_prompt/basic/score"]
    for name in ("basic_seed0.png", "advanced_seed0.png"):
        assert (tmp_path / "b" / "images" / name).read_bytes() == (
            tmp_path / "a" / "images" / name
        ).read_bytes()


def test_a_changed_image_forces_regeneration_and_says_why(small_cfg, tmp_path, capsys):
    crashed = _crash_after_generation(small_cfg, tmp_path / "a")
    damaged = tmp_path / "a" / "images" / "basic_seed0.png"
    damaged.write_bytes(damaged.read_bytes()[:-10])
    resumed = run_job(small_cfg, output_dir=tmp_path / "b")
    out = capsys.readouterr().out
    assert (
        f"earlier attempt {crashed} (FAILED): regenerating: {damaged} changed since it was generated" in out
    )
    metrics = MlflowClient(small_cfg.tracking.uri).get_run(resumed.run_id).data.metrics
    assert metrics["time/generate_s"] > 0
