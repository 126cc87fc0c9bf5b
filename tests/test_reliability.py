"""Bad values refused before any work, no run left RUNNING, sweeps kept apart: the faults of
issue 10, each reproduced against the real CLI, Hydra, MLflow store and pipeline."""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient
from omegaconf import open_dict
from PIL import Image
from safetensors.torch import save_file

from bespoke_exp import tracking
from bespoke_exp.config import CONF_DIR, DEMO_RECIPE, ConfigError, compose_config, default_demo_dir
from bespoke_exp.demo.punks import PunkSpec, render
from bespoke_exp.generate.checkpoints import CheckpointError, describe_checkpoint
from bespoke_exp.generate.pipeline import LoraLoadError, load_pipeline, lora_applied
from bespoke_exp.pixelart.blank import blank_reason
from bespoke_exp.sweep.callback import sweep_problems
from bespoke_exp.sweep.context import expand_jobs
from bespoke_exp.sweep.job import run_job
from bespoke_exp.sweep.validate import config_problems
from tests.conftest import read_only, small_sweep_command, tmpfs

STEM = "Bespoke_Punks_24x24_Pixel_Art"


def _uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"


def _command(tmp_path: Path, demo_dir: Path, *overrides: str, multirun: bool = True) -> list[str]:
    return small_sweep_command(
        demo_dir,
        f"paths.root={tmp_path}",
        f"tracking.uri={_uri(tmp_path)}",
        "tracking.experiment=faults",
        "sampler.seeds=[0]",
        *overrides,
        multirun=multirun,
    )


def _runs(tmp_path: Path) -> tuple[list, list]:
    tracker = tracking.connect(_uri(tmp_path), "faults")  # takes the store's setup lock, as sweeps do
    runs = tracker.client.search_runs([tracker.experiment_id])
    parents = [r for r in runs if r.data.tags.get("bespoke.role") == "sweep"]
    return parents, [r for r in runs if r.data.tags.get("bespoke.role") == "job"]


def _run(command: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


# --- 1. non-finite numbers and blank images ------------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("guidance=nan", "guidance=nan must be a finite number"),
        ("guidance=inf", "guidance=inf must be a finite number"),
        ("checkpoint.lora_scale=nan", "checkpoint.lora_scale=nan must be a finite number"),
        ("guidance=abc", "guidance='abc' must be a number"),
        ("guidance=[1,2]", "guidance=[1, 2] must be a number"),
        ("sampler.steps=abc", "sampler.steps='abc' must be an integer > 0"),
        ("epoch=11", "epoch=11 is outside 1..10 (checkpoint.epochs=10)"),
        ("sampler.scheduler=dpm_fast", "sampler.scheduler='dpm_fast' is not one of euler"),
        ("model.dtype=float8", "model.dtype='float8' is not one of auto, float32"),
        ("+metrics.weights.nope=0.5", "metrics.weights.nope: no such metric"),
        (
            "metrics.palette=[notacolour]",
            "metrics.palette: palette entry: colour 'notacolour' is not a colour name",
        ),
        ("model.pretrained=/no/such/model", "model.pretrained=/no/such/model is not a folder"),
        ("model=local_sdxl", "model.pretrained is not set (???)"),
    ],
)
def test_each_bad_value_is_named_with_what_is_allowed(override: str, message: str) -> None:
    problems = config_problems(compose_config([override]))
    assert any(message in p for p in problems), problems


def test_a_cuda_device_on_a_machine_without_one_is_refused() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU: model.device=cuda is valid here")
    problems = config_problems(compose_config(["model.device=cuda"]))
    assert problems == ["model.device=cuda but torch sees no CUDA GPU on this machine; use model.device=cpu"]


def test_an_empty_prompt_text_is_refused(demo_dir) -> None:
    cfg = compose_config([f"paths.demo={demo_dir}", "prompts=seed_tests"])
    with open_dict(cfg):
        cfg.prompts["items"][0]["text"] = "  "
    assert "prompts item 'basic': text is empty; write the prompt to generate" in config_problems(cfg)


def test_every_swept_value_is_checked_before_the_sweep_starts() -> None:
    overrides = ["epoch=1,11,abc", "guidance=-1,7.5"]
    jobs = expand_jobs(overrides)
    assert len(jobs) == 6
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        config = compose("config", return_hydra_config=True)  # as Hydra composes a multirun
        problems = sweep_problems(config, jobs)
    assert problems == [
        "guidance=-1 must be >= 0",
        "epoch=11 is outside 1..10 (checkpoint.epochs=10)",
        "epoch='abc' must be an integer (sweep with epoch=1,2,...,10)",
    ]


def test_a_blank_render_is_no_picture_but_a_flat_portrait_background_with_features_is() -> None:
    assert "all black" in blank_reason(Image.new("RGB", (64, 64)))
    assert "one flat colour (#ff8000)" in blank_reason(Image.new("RGB", (64, 64), (255, 128, 0)))
    rounding = np.full((64, 64, 3), 128, np.uint8) + np.random.default_rng(0).integers(
        0, 2, (64, 64, 3), np.uint8
    )
    assert blank_reason(rounding) is not None  # a one-level wobble is still no picture
    portrait = Image.fromarray(render(PunkSpec())).resize((240, 240), Image.NEAREST)
    assert blank_reason(portrait) is None


def test_a_diverging_generation_fails_its_run_and_is_never_scored(small_cfg, tmp_path) -> None:
    small_cfg.checkpoint.lora_scale = 1e30  # finite, so it passes validation; the UNet overflows to NaN
    with pytest.raises(Exception, match="is all black: the generation diverged"):
        run_job(small_cfg, output_dir=tmp_path)
    runs = MlflowClient(small_cfg.tracking.uri).search_runs(
        [MlflowClient(small_cfg.tracking.uri).get_experiment_by_name("tests").experiment_id]
    )
    assert [r.info.status for r in runs] == ["FAILED"]
    assert "score" not in runs[0].data.metrics and "generation diverged" in runs[0].data.tags["error"]


@pytest.mark.slow
def test_a_non_finite_sweep_value_stops_the_sweep_before_any_run(tmp_path, demo_dir) -> None:
    done = _run(_command(tmp_path, demo_dir, "epoch=1,2", "guidance=7.5", "checkpoint.lora_scale=nan"))
    assert done.returncode == 2, done.stderr[-2000:]
    assert "checkpoint.lora_scale=nan must be a finite number" in done.stderr
    assert "Traceback" not in done.stderr
    assert _runs(tmp_path) == ([], [])


# --- 2. concurrent sweeps -----------------------------------------------------------------


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


# --- 3. config errors found at once, in sweep and single-run mode ------------------------


@pytest.mark.slow
def test_bad_values_in_a_sweep_are_listed_one_per_line_before_any_work(tmp_path, demo_dir) -> None:
    bad = ("epoch=1,11", "guidance=-1,7.5", "+metrics.weights.nope=0.5", "analysis.metric=nosuch")
    done = _run(_command(tmp_path, demo_dir, *bad))
    assert done.returncode == 2
    for line in (
        "epoch=11 is outside 1..10",
        "guidance=-1 must be >= 0",
        "metrics.weights.nope: no such metric",
        "analysis.metric='nosuch' is not a metric",  # the end-of-sweep analysis: checked now, too
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


# --- 4. no parent run left RUNNING ------------------------------------------------------


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


@contextmanager
def _kill_inside_a_write() -> Iterator[None]:
    """SIGTERM delivered (to a handler that raises, as the CLI's does) just after a store
    write's first INSERT, while it holds SQLite's write lock: where a Ctrl-C or a kill lands
    in a real sweep now and then."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    writes = []

    def kill_mid_write(conn, cursor, statement, *args) -> None:
        if statement.lstrip().upper().startswith(("INSERT", "UPDATE")):
            writes.append(statement)
            if len(writes) == 1:
                signal.raise_signal(signal.SIGTERM)

    def interrupt(signum, frame):
        raise KeyboardInterrupt("stopped by signal SIGTERM")

    previous = signal.signal(signal.SIGTERM, interrupt)
    event.listen(Engine, "after_cursor_execute", kill_mid_write)
    try:
        yield
    finally:
        event.remove(Engine, "after_cursor_execute", kill_mid_write)
        signal.signal(signal.SIGTERM, previous)


def test_a_kill_inside_a_store_write_lets_the_write_finish_and_the_run_be_marked_killed(tmp_path) -> None:
    tracker = tracking.connect(_uri(tmp_path), "faults")
    run_id = tracking.start_run(tracker, "sweep", tags={tracking.TAG_ROLE: "sweep"})
    # Whether the cut write's connection is collected before the next write is up to the garbage
    # collector: without it, as in the CI run that hung, the lock is never given back.
    gc.disable()
    try:
        with _kill_inside_a_write(), pytest.raises(KeyboardInterrupt):
            tracking.log_metrics(tracker, run_id, {f"loss_{i}": float(i) for i in range(20)})
        started = time.monotonic()
        tracking.fail_run(tracker, run_id, KeyboardInterrupt("stopped by signal SIGTERM"))
    finally:
        gc.enable()
    # Cut in half, the write leaves this process's own connection holding the lock: marking
    # the run takes minutes of "database is locked" retries, then fails and leaves it RUNNING.
    assert time.monotonic() - started < 10
    run = tracker.client.get_run(run_id)
    assert run.info.status == "KILLED"
    assert run.data.metrics == {f"loss_{i}": float(i) for i in range(20)}  # the write completed


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
    client = MlflowClient(_uri(tmp_path))
    for run_id in orphans:
        run = client.get_run(run_id)
        assert run.info.status == "KILLED"
        assert f"orphaned: process {process.pid}" in run.data.tags["error"]


# --- 5. a tracking store that can't be written ------------------------------------------


@pytest.mark.parametrize("existing", [False, True])
def test_a_read_only_store_fails_in_seconds_with_one_line(existing: bool) -> None:
    with tmpfs("1m") as folder:
        database = folder / "mlflow.db"
        if existing:
            # A real store, made by a process that then exits (an open database keeps the mount busy).
            code = f"from bespoke_exp import tracking; tracking.connect('sqlite:///{database}', 'x')"
            subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
        read_only(folder)
        started = time.monotonic()
        with pytest.raises(tracking.TrackingError) as error:
            tracking.connect(f"sqlite:///{database}", "x")
        elapsed = time.monotonic() - started
    assert elapsed < 10, elapsed
    message = str(error.value)
    assert message.startswith(
        f"cannot use MLflow tracking store tracking.uri='sqlite:///{database}': it can't be written"
    )
    assert "\n" not in message


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


# --- 6. files that are not what they claim, a model that can't load ----------------------


def test_a_safetensors_file_without_lora_weights_is_named(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    path = tmp_path / f"{STEM}-000001.safetensors"
    save_file({"model.diffusion_model.conv_in.weight": torch.randn(4, 4)}, path)
    with pytest.raises(CheckpointError, match=f"{path} holds no LoRA weights .*it is not a LoRA file"):
        describe_checkpoint(path, 1)
    # refused from its header alone: a multi-GB base model in checkpoint.dir is not hashed first
    assert not (tmp_path / "cache").exists()


def test_a_lora_that_does_not_fit_the_base_model_is_named_with_its_file(demo_dir, tmp_path) -> None:
    path = tmp_path / "wrong_shapes.safetensors"
    key = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"
    save_file(
        {
            f"{key}.lora_down.weight": torch.randn(4, 7),
            f"{key}.lora_up.weight": torch.randn(5, 4),
            f"{key}.alpha": torch.tensor(4.0),
        },
        path,
    )
    pipe = load_pipeline(str(demo_dir / "pipeline"), device="cpu", dtype="float32")
    with pytest.raises(LoraLoadError, match=f"{path} could not be applied to the base model"):
        with lora_applied(pipe, path):
            pass
    assert not pipe.get_list_adapters()  # nothing half-applied is left on the cached pipeline


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


def test_an_empty_xdg_cache_home_means_the_usual_cache_not_the_working_folder(tmp_path, monkeypatch) -> None:
    # The XDG spec: an empty value counts as unset. Read as "", the demo would be built
    # into whatever folder the command happened to run from.
    monkeypatch.delenv("BESPOKE_EXP_DEMO_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", "")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_demo_dir() == (tmp_path / ".cache" / "bespoke_exp" / f"demo-{DEMO_RECIPE}").resolve()


# --- 7. hang-ups, full stores, orphans anywhere in the store ------------------------------


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


def test_orphans_in_every_experiment_are_closed_not_only_the_sweeps_own(tmp_path) -> None:
    uri = _uri(tmp_path)
    elsewhere = tracking.connect(uri, "last-week")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan = tracking.start_run(elsewhere, "sweep", tags={tracking.TAG_PID: str(dead.pid)})
    alive = tracking.start_run(elsewhere, "sweep")  # this process: still running, left alone
    tracker = tracking.connect(uri, "faults")  # what a later sweep in another experiment opens
    assert tracking.close_orphans(tracker.uri, tracker.client) == [orphan]
    assert tracker.client.get_run(orphan).info.status == "KILLED"
    assert tracker.client.get_run(alive).info.status == "RUNNING"


def test_a_deleted_experiment_of_the_same_name_is_named_with_the_way_out(tmp_path) -> None:
    tracker = tracking.connect(_uri(tmp_path), "faults")
    tracker.client.delete_experiment(tracker.experiment_id)
    with pytest.raises(tracking.TrackingError) as error:
        tracking.connect(_uri(tmp_path), "faults")
    message = str(error.value)
    assert "experiment 'faults' was deleted" in message
    assert f"mlflow experiments restore --experiment-id {tracker.experiment_id}" in message


def test_a_store_another_program_holds_locked_fails_in_seconds_saying_so(tmp_path) -> None:
    import sqlite3

    tracking.connect(_uri(tmp_path), "faults")
    holder = sqlite3.connect(tmp_path / "mlruns" / "mlflow.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    started = time.monotonic()
    try:
        with pytest.raises(tracking.TrackingError, match="the database is locked by another program"):
            tracking.connect(_uri(tmp_path), "faults")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert time.monotonic() - started < 10


def test_a_checkpoint_path_that_is_a_folder_or_a_broken_link_says_what_it_is(tmp_path) -> None:
    from bespoke_exp.generate.checkpoints import resolve_checkpoint

    (tmp_path / f"{STEM}-000001.safetensors").mkdir()
    loop = tmp_path / f"{STEM}-000002.safetensors"
    loop.symlink_to(loop)
    save_file({"x": torch.zeros(1)}, tmp_path / f"{STEM}-000003.safetensors")
    with pytest.raises(CheckpointError) as folder:
        resolve_checkpoint(tmp_path, STEM, 1, 10)
    assert str(folder.value) == (
        f"epoch=1: {tmp_path}/{STEM}-000001.safetensors is a folder; it must be the LoRA .safetensors file"
    )
    with pytest.raises(CheckpointError, match="is a symbolic link to .* which leads to no file"):
        resolve_checkpoint(tmp_path, STEM, 2, 10)
    with pytest.raises(CheckpointError, match="epochs with a file: 3$"):  # the folder and link are no files
        resolve_checkpoint(tmp_path, STEM, 4, 10)


def test_a_header_nested_deeper_than_python_recurses_is_kept_as_text(tmp_path, capsys) -> None:
    from bespoke_exp import inspect as inspect_cli

    deep = "[" * 200_000 + "]" * 200_000
    path = tmp_path / f"{STEM}.safetensors"
    save_file(
        {"lora_unet_a.lora_down.weight": torch.zeros(4, 8), "lora_unet_a.lora_up.weight": torch.zeros(8, 4)},
        path,
        metadata={"ss_tag_frequency": deep, "ss_network_dim": "4"},
    )
    assert inspect_cli.main([str(path)]) == 0
    assert inspect_cli.main([str(path), "--json"]) == 0
    table, described = capsys.readouterr().out.split("\n{", 1)
    assert json.loads("{" + described)["checkpoints"][0]["rank"] == 4
