"""A base model that can't be loaded here fails in seconds with one message that says what
was tried, why it can't load and how to fix it, and fails the job's run with that reason.
No network is needed: the hub is made unreachable, or offline mode is on."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from huggingface_hub import constants
from mlflow.tracking import MlflowClient

from bespoke_exp.generate.pipeline import ModelLoadError, load_pipeline
from tests.helpers import kohya_metadata, write_lora

SDXL = "stabilityai/stable-diffusion-xl-base-1.0"
FIX = "model.pretrained=/path/to/a/save_pretrained/folder"


@pytest.fixture()
def empty_hf_cache(tmp_path, monkeypatch) -> Path:
    """This process's Hugging Face cache is an empty folder (as HF_HOME would make it)."""
    cache = tmp_path / "hf" / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture()
def silent_hub(monkeypatch) -> str:
    """A hub endpoint that accepts connections and never answers, like a blackholed network:
    diffusers' own requests would wait out their timeouts and retries on it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    endpoint = f"http://127.0.0.1:{server.getsockname()[1]}"
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    yield endpoint
    server.close()


def test_an_uncached_hub_model_with_an_unreachable_hub_fails_in_seconds(empty_hf_cache, silent_hub):
    started = time.monotonic()
    with pytest.raises(ModelLoadError) as error:
        load_pipeline(SDXL, device="cpu")
    assert time.monotonic() - started < 5
    message = str(error.value)
    assert message.startswith(f"model.pretrained={SDXL!r} could not be loaded: ")
    assert f"nor in the local Hugging Face cache ({empty_hf_cache})" in message
    assert f"the hub ({silent_hub}) can't be reached" in message
    assert FIX in message and f"hf download {SDXL}" in message and "\n" not in message


def test_a_hub_that_refuses_the_connection_is_not_waited_for(empty_hf_cache, monkeypatch):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now: connections are refused at once, like no network
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    started = time.monotonic()
    with pytest.raises(ModelLoadError, match="can't be reached from this machine"):
        load_pipeline(SDXL, device="cpu")
    assert time.monotonic() - started < 1.5  # the probe's answer ends the wait, not its timeout


def test_an_uncached_hub_model_in_offline_mode_fails_at_once(empty_hf_cache, monkeypatch):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    started = time.monotonic()
    with pytest.raises(
        ModelLoadError, match=r"offline mode is on \(HF_HUB_OFFLINE=1\)\. Fix: model\.pretrained="
    ):
        load_pipeline(SDXL, device="cpu")
    assert time.monotonic() - started < 2


def test_a_value_that_is_neither_a_folder_nor_a_hub_id_is_named(empty_hf_cache):
    with pytest.raises(ModelLoadError, match=r"'models/sdxl/base' could not be loaded: it is not a folder"):
        load_pipeline("models/sdxl/base", device="cpu")


def _hub_cache_copy(pipeline: Path, hf_home: Path, repo_id: str) -> None:
    """`pipeline` laid out as huggingface_hub caches a downloaded snapshot of `repo_id`."""
    repo = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    commit = "0" * 40
    shutil.copytree(pipeline, repo / "snapshots" / commit)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)


@pytest.mark.slow
def test_a_cached_hub_model_still_loads_offline(demo_dir, tmp_path):
    """The pre-check lets a model that is in the local cache through to diffusers."""
    _hub_cache_copy(demo_dir / "pipeline", tmp_path / "hf", "bespoke/tiny-sdxl")
    code = (
        "from bespoke_exp.generate.pipeline import load_pipeline; "
        "print(type(load_pipeline('bespoke/tiny-sdxl', device='cpu', dtype='float32')).__name__)"
    )
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "StableDiffusionXLPipeline"


@pytest.mark.slow
def test_model_sdxl_without_its_weights_fails_the_run_with_one_clear_line(tmp_path):
    loras = tmp_path / "loras"
    loras.mkdir()
    write_lora(loras / "Run.safetensors", metadata=kohya_metadata(1, num_epochs=1))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    command = [
        sys.executable, "-m", "bespoke_exp", "model=sdxl", "checkpoint=folder", f"checkpoint.dir={loras}",
        "checkpoint.stem=Run", "checkpoint.epochs=1", "prompts=seed_tests", f"paths.root={tmp_path}",
        f"tracking.uri={uri}", "tracking.experiment=no_model",
    ]  # fmt: skip
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    [line] = [line for line in done.stderr.splitlines() if "could not be loaded" in line]
    assert line.startswith(
        f"[bespoke_exp] model.pretrained={SDXL!r} could not be loaded: it is not a local folder"
    )
    assert "offline mode is on (HF_HUB_OFFLINE=1)" in line and FIX in line
    client = MlflowClient(uri)
    [run] = client.search_runs([client.get_experiment_by_name("no_model").experiment_id])
    assert run.info.status == "FAILED"
    assert run.data.tags["error"].startswith(f"ModelLoadError: model.pretrained={SDXL!r} could not be loaded")
    # The checkpoint is described on the run even though nothing was generated.
    assert run.data.tags["checkpoint_family"] == "sdxl" and run.data.tags["checkpoint_rank"] == "4"
    assert len(run.data.tags["checkpoint_sha256"]) == 64
    assert run.data.params["train.resolution"] == "(1024, 1024)"
    assert run.data.params["train.trigger_words"] == '["TOK bespoke", "pixel art"]'
