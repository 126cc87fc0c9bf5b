"""Before a sweep starts, every job it would run is composed (with the user's own config folders)
and checked, and a parallel launcher on a SQLite file is refused."""

from __future__ import annotations

from hydra import compose, initialize_config_dir

from bespoke_exp.config import CONF_DIR
from bespoke_exp.config.overrides import expand_jobs
from bespoke_exp.sweep.callback import (
    BASIC_LAUNCHER,
    sqlite_parallel_problem,
    sweep_problems,
    user_search_path,
)
from tests.helpers import user_prompts

JOBLIB = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"


def test_every_swept_value_is_checked_before_the_sweep_starts() -> None:
    overrides = ["epoch=1,11,abc", "guidance=-1,7.5"]
    jobs = expand_jobs(overrides)
    assert len(jobs) == 6
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        config = compose("config", return_hydra_config=True)  # as Hydra composes a multirun
        problems = sweep_problems(config, jobs)
    assert problems == [
        "guidance=-1 must be >= 0",
        "epoch=11 is outside 1..10 (checkpoint.epochs=10); epoch=0 is the base model without the LoRA",
        "epoch='abc' must be an integer (sweep with epoch=0,1,2,...,10; 0 is the base model)",
    ]


def test_a_multirun_composes_its_jobs_with_the_users_hydra_searchpath(tmp_path) -> None:
    folder = user_prompts(tmp_path / "conf", [{"id": "p1", "split": "heldout", "text": "bespoke, punk"}])
    searchpath = f"hydra.searchpath=[file://{folder}]"
    jobs = expand_jobs(["prompts=mine", "epoch=1,2"])
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        config = compose("config", overrides=[searchpath, "prompts=mine"], return_hydra_config=True)
        search_path = user_search_path(config)
        problems = sweep_problems(config, jobs, search_path)
    assert search_path == [f"file://{folder}"]
    assert problems == []


def test_an_unsafe_id_in_a_users_prompt_set_stops_the_sweep_before_any_run(tmp_path) -> None:
    folder = user_prompts(tmp_path / "conf", [{"id": "../../outside", "text": "bespoke, punk"}])
    jobs = expand_jobs(["prompts=mine", "epoch=1,2"])
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        overrides = [f"hydra.searchpath=[file://{folder}]", "prompts=mine"]
        config = compose("config", overrides=overrides, return_hydra_config=True)
        problems = sweep_problems(config, jobs, user_search_path(config))
    assert problems == [
        "prompts item id '../../outside' must be 1-64 ASCII letters, digits, '_', '-' or '.', starting "
        "with a letter or digit (it names files and MLflow metrics)"
    ]


def test_sqlite_rule() -> None:
    assert sqlite_parallel_problem(JOBLIB, "sqlite:////tmp/x/mlflow.db")
    assert sqlite_parallel_problem(JOBLIB, "http://127.0.0.1:5000") is None
    assert sqlite_parallel_problem(BASIC_LAUNCHER, "sqlite:////tmp/x/mlflow.db") is None
