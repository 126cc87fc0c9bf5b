"""run_job end to end on the demo, against a real temporary MLflow store: what a job logs, and
every way it fails (bad values, a missing epoch, a diverging generation, a LoRA of another
family, a store it can't use) before or with a run that says why."""

import json

import numpy as np
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import open_dict

from bespoke_exp import tracking
from bespoke_exp.config import ConfigError, compose_config, literal_text
from bespoke_exp.generate.checkpoints import CheckpointError
from bespoke_exp.job.images import GenerationError
from bespoke_exp.job.run import SweepContext, run_job
from bespoke_exp.tracking import TrackingError
from tests.helpers import FLUX_KOHYA, SD1_KOHYA, SECRET, kohya_metadata, write_lora


def _runs(cfg):
    client = MlflowClient(cfg.tracking.uri)
    experiment = client.get_experiment_by_name(cfg.tracking.experiment)
    return client, client.search_runs([experiment.experiment_id]) if experiment else []


def test_same_job_twice_gives_byte_identical_images(small_cfg, tmp_path):
    first = run_job(small_cfg, output_dir=tmp_path / "a")
    with open_dict(small_cfg):
        small_cfg.force = True
    second = run_job(small_cfg, output_dir=tmp_path / "b")
    assert second.status == "FINISHED" and second.run_id != first.run_id
    names = sorted(p.name for p in (first.output_dir / "images").glob("*.png"))
    assert names == ["advanced_seed0.png", "basic_seed0.png"]
    for name in names:
        assert (tmp_path / "a" / "images" / name).read_bytes() == (
            tmp_path / "b" / "images" / name
        ).read_bytes()


def test_job_logs_params_tags_and_artifacts(small_cfg, tmp_path):
    result = run_job(small_cfg, output_dir=tmp_path, sweep=SweepContext("s1", _parent(small_cfg), 1))
    client, runs = _runs(small_cfg)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "epoch=03 guidance=7.5"
    assert run.data.params["epoch"] == "3"
    assert run.data.params["sampler.seeds"] == "[0]"
    assert run.data.params["model.name"] == "demo"
    assert run.data.params["checkpoint.path"].endswith("Bespoke_Punks_24x24_Pixel_Art-000003.safetensors")
    tags = run.data.tags
    assert tags["epoch"] == "3" and tags["guidance"] == "7.5" and tags["sweep_id"] == "s1"
    assert len(tags["checkpoint_sha256"]) == 64 and len(tags["generation_identity"]) == 16
    assert len(tags["scoring_identity"]) == 16
    assert tags["mlflow.parentRunId"] == _parent(small_cfg)
    artifacts = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"sheet.png", "config.yaml", "images"} <= artifacts
    images = {a.path for a in client.list_artifacts(result.run_id, "images")}
    assert {"images/basic_seed0.png", "images/advanced_seed0.png"} <= images
    tables = {a.path for a in client.list_artifacts(result.run_id, "metrics")}
    assert {"metrics/per_image.json", "metrics/checks.json"} <= tables
    metrics = run.data.metrics
    # The job's score, and each prompt's, is the mean over its images of the scores logged per image.
    rows = tracking.load_table(
        tracking.open_store(small_cfg.tracking.uri, "tests"), result.run_id, "metrics/per_image.json"
    )
    assert metrics["score"] == pytest.approx(np.mean([row["score"] for row in rows]))
    for prompt in ("basic", "advanced"):
        mine = [row["score"] for row in rows if row["prompt_id"] == prompt]
        assert metrics[f"by_prompt/{prompt}/score"] == pytest.approx(np.mean(mine))
    assert "by_prompt/advanced/score" in metrics and "by_prompt/basic/score" in metrics
    assert "check/pupils_8_12" in metrics and "by_prompt/advanced/check/pupils_8_12" in metrics


_PARENTS = {}


def _parent(cfg) -> str:
    from bespoke_exp import tracking

    key = cfg.tracking.uri
    if key not in _PARENTS:
        tracker = tracking.connect(cfg.tracking.uri, cfg.tracking.experiment)
        _PARENTS[key] = tracking.start_run(tracker, "parent")
    return _PARENTS[key]


def test_missing_epoch_fails_the_run_with_the_reason(small_cfg, tmp_path, demo_dir):
    (demo_dir / "checkpoints").joinpath("Bespoke_Punks_24x24_Pixel_Art-000003.safetensors").rename(
        tmp_path / "moved.safetensors"
    )
    try:
        with pytest.raises(CheckpointError, match="epochs with a file: 1, 2, 4, 5, 6, 7, 8, 9, 10"):
            run_job(small_cfg, output_dir=tmp_path)
    finally:
        (tmp_path / "moved.safetensors").rename(
            demo_dir / "checkpoints" / "Bespoke_Punks_24x24_Pixel_Art-000003.safetensors"
        )
    client, runs = _runs(small_cfg)
    assert [r.info.status for r in runs] == ["FAILED"]
    assert "Bespoke_Punks_24x24_Pixel_Art-000003.safetensors" in runs[0].data.tags["error"]
    assert "error" in {a.path for a in client.list_artifacts(runs[0].info.run_id)}


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("sampler.steps", 0, "sampler.steps=0 must be > 0"),
        ("sampler.guidance", -1.0, "guidance=-1 must be >= 0"),
        ("sampler.width", 100, "sampler.width=100 must be a positive multiple of 8"),
        ("sampler.seeds", [], "sampler.seeds is empty"),
        ("epoch", -1, "epoch=-1 is outside 1..10"),
    ],
)
def test_bad_sampler_values_are_rejected_before_any_run(small_cfg, tmp_path, key, value, message):
    with open_dict(small_cfg):
        parent, leaf = key.rsplit(".", 1) if "." in key else (None, key)
        (small_cfg[parent] if parent else small_cfg)[leaf] = value
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        run_job(small_cfg, output_dir=tmp_path)
    assert _runs(small_cfg)[1] == []


def test_prompt_coordinate_outside_the_grid_is_a_config_error(small_cfg, tmp_path):
    with open_dict(small_cfg):
        small_cfg.prompts["items"][0].text = "TOK bespoke, black pupils fixed at (8,30) and (13,12)"
    with pytest.raises(ConfigError, match=r"'basic'.*\(8,30\)"):
        run_job(small_cfg, output_dir=tmp_path)


def test_unwritable_tracking_store_fails_fast_naming_the_uri(small_cfg, tmp_path):
    blocker = tmp_path / "file_not_dir"
    blocker.write_text("")
    with open_dict(small_cfg):
        small_cfg.tracking.uri = f"sqlite:///{blocker}/mlflow.db"
    with pytest.raises(TrackingError, match=f"tracking.uri='sqlite:///{blocker}/mlflow.db'"):
        run_job(small_cfg, output_dir=tmp_path)
    assert not (tmp_path / "images").exists()


def test_missing_training_folder_is_named_before_any_run(small_cfg, tmp_path):
    with open_dict(small_cfg):
        small_cfg.checkpoint.train_dir = str(tmp_path / "no_such_folder")
    with pytest.raises(ConfigError, match=r"checkpoint.train_dir=.*no_such_folder is not a folder"):
        run_job(small_cfg, output_dir=tmp_path)
    assert _runs(small_cfg)[1] == []


def test_unreachable_tracking_server_fails_fast_naming_the_uri(small_cfg, tmp_path):
    with open_dict(small_cfg):
        small_cfg.tracking.uri = "http://127.0.0.1:9"  # nothing listens on the discard port
    # The probe's message, not MLflow's own after ~4 minutes of retries.
    with pytest.raises(
        TrackingError, match=r"cannot reach MLflow tracking server tracking.uri='http://127.0.0.1:9'"
    ):
        run_job(small_cfg, output_dir=tmp_path)


def test_a_diverging_generation_fails_its_run_and_is_never_scored(small_cfg, tmp_path) -> None:
    small_cfg.checkpoint.lora_scale = 1e30  # finite, so it passes validation; the UNet overflows to NaN
    with pytest.raises(GenerationError, match="is all black: the generation diverged"):
        run_job(small_cfg, output_dir=tmp_path)
    runs = MlflowClient(small_cfg.tracking.uri).search_runs(
        [MlflowClient(small_cfg.tracking.uri).get_experiment_by_name("tests").experiment_id]
    )
    assert [r.info.status for r in runs] == ["FAILED"]
    assert "score" not in runs[0].data.metrics and "generation diverged" in runs[0].data.tags["error"]


def test_config_errors_raise_one_config_error_listing_every_problem(small_cfg, tmp_path) -> None:
    small_cfg.sampler.guidance = float("nan")
    small_cfg.sampler.steps = 0
    with pytest.raises(ConfigError) as error:
        run_job(small_cfg, output_dir=tmp_path)
    assert str(error.value).splitlines()[1:] == [
        "  - guidance=nan must be a finite number",
        "  - sampler.steps=0 must be > 0",
    ]
    assert not tracking.connect(small_cfg.tracking.uri, "tests").client.search_runs(
        [tracking.connect(small_cfg.tracking.uri, "tests").experiment_id]
    )


def test_a_job_logs_the_literal_prompt_and_never_the_secret_it_names(small_cfg, tmp_path, secret_env) -> None:
    with open_dict(small_cfg):
        small_cfg.prompts["items"] = small_cfg.prompts["items"][:1]
        small_cfg.prompts["items"][0]["text"] = f"{small_cfg.prompts['items'][0]['text']}, {secret_env}"
    literal_text(small_cfg)  # what every composition does: the CLI, the sweep callback, compose_config
    result = run_job(small_cfg, output_dir=tmp_path / "job")
    run = tracking.connect(small_cfg.tracking.uri, "tests").client.get_run(result.run_id)
    logged = json.dumps(run.data.params) + json.dumps(run.data.tags)
    logged += (tmp_path / "job" / "config.yaml").read_text()
    assert SECRET not in logged
    assert secret_env in run.data.params["prompts.items.basic.text"]


@pytest.mark.parametrize(("modules", "label"), [(SD1_KOHYA, "SD1.x"), (FLUX_KOHYA, "FLUX")])
def test_a_lora_of_another_family_fails_the_job_before_the_base_model_loads(tmp_path, modules, label):
    folder = tmp_path / "loras"
    folder.mkdir()
    for name in ("Run-000001", "Run"):
        write_lora(folder / f"{name}.safetensors", modules, metadata=kohya_metadata(2, num_epochs=2))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = compose_config(
        [
            "model=sdxl",  # a hub id this machine can't load: a job reaching the load would say so instead
            "checkpoint=folder",
            f"checkpoint.dir={folder}",
            "checkpoint.stem=Run",
            "checkpoint.epochs=2",
            "prompts=seed_tests",
            f"paths.root={tmp_path}",
            f"tracking.uri={uri}",
            "tracking.experiment=family",
        ]
    )
    with pytest.raises(CheckpointError) as error:
        run_job(cfg, output_dir=tmp_path / "out")
    message = str(error.value)
    assert message.startswith(f"{folder / 'Run.safetensors'} is a LoRA for {label} (")
    assert "but model=sdxl expects LoRAs for SDXL (model.family=sdxl)" in message
    client = MlflowClient(uri)
    [run] = client.search_runs([client.get_experiment_by_name("family").experiment_id])
    assert run.info.status == "FAILED" and label in run.data.tags["error"]
    assert run.data.tags["checkpoint_family"] == label.lower().replace(".x", "")
    assert run.data.params["train.optimizer"] == "bitsandbytes.optim.adamw.AdamW8bit"
