"""The training loss per epoch, read from real TensorBoard event files laid out as kohya's
sd-scripts writes them (`<logging_dir>/<YYYYmmddHHMMSS>/network_train/events.out.tfevents.*`),
and from the log the demo's trainer shipped."""

from __future__ import annotations

import calendar
import math
import shutil
import time
from pathlib import Path

import pytest
from safetensors import safe_open
from torch.utils.tensorboard import SummaryWriter

from bespoke_exp.analysis.training_log import TrainingLogError, event_files, read_training_log
from bespoke_exp.demo.build import ensure_demo
from tests.helpers import STEM, problems_with


def kohya_run(
    logging_dir: Path, started: str, epoch_losses: list[float], tag: str = "loss/epoch_average"
) -> Path:
    """One kohya run folder: a step loss per step (two steps an epoch) and the epoch's mean at
    step = epoch, plus the hparams subfolder accelerate writes; returns the run folder."""
    run = logging_dir / started
    with SummaryWriter(str(run / "network_train")) as writer:
        writer.add_hparams({"learning_rate": 1e-3}, {})
        for epoch, loss in enumerate(epoch_losses, start=1):
            for step in (2 * epoch - 1, 2 * epoch):
                writer.add_scalar("loss/current", loss, step)
            writer.add_scalar(tag, loss, epoch)
    return run


def utc(stamp: str) -> float:
    return float(calendar.timegm(time.strptime(stamp, "%Y%m%d%H%M%S")))


@pytest.mark.parametrize("tag", ["loss/epoch_average", "loss/epoch"])  # sd-scripts now, and before
def test_the_loss_of_every_epoch_is_read_back(tmp_path, tag) -> None:
    run = kohya_run(tmp_path, "20260101120000", [0.5, 0.25, 0.125], tag)
    log = read_training_log(tmp_path)
    assert log.loss_by_epoch == {1: 0.5, 2: 0.25, 3: 0.125}
    assert (log.run_dir, log.tag) == (run, tag)


@pytest.mark.parametrize("where", ["logging_dir", "run", "network_train"])
def test_the_log_is_found_from_the_logging_dir_the_run_folder_or_its_network_train(tmp_path, where) -> None:
    run = kohya_run(tmp_path / "logs", "20260101120000", [0.5, 0.25])
    folder = {"logging_dir": tmp_path / "logs", "run": run, "network_train": run / "network_train"}[where]
    log = read_training_log(folder)
    assert log.run_dir == run and log.loss_by_epoch == {1: 0.5, 2: 0.25}


def test_of_several_runs_the_one_that_started_with_the_checkpoints_training_is_read(tmp_path) -> None:
    kohya_run(tmp_path, "20260101120000", [0.5, 0.25])
    second = kohya_run(tmp_path, "20260102120000", [0.75, 0.375])
    log = read_training_log(tmp_path, started_at=utc("20260102120000") + 3)  # the header's time.time()
    assert log.run_dir == second and log.loss_by_epoch == {1: 0.75, 2: 0.375}
    with pytest.raises(TrainingLogError) as without:
        read_training_log(tmp_path)
    assert "20260101120000" in str(without.value) and "20260102120000" in str(without.value)
    assert "point train_logs at" in str(without.value)
    with pytest.raises(TrainingLogError, match="none started within 10 minutes"):
        read_training_log(tmp_path, started_at=utc("20260103120000"))


def test_a_resumed_run_is_merged_by_step_and_the_later_write_wins(tmp_path) -> None:
    folder = tmp_path / "20260101120000" / "network_train"
    for name, walltime, losses in (
        ("2", 1000.0, {1: 0.5, 2: 0.25, 3: 0.2}),
        ("1", 2000.0, {3: 0.125, 4: 0.0625}),
    ):
        with SummaryWriter(str(folder)) as writer:
            for epoch, loss in losses.items():
                writer.add_scalar("loss/epoch_average", loss, epoch, walltime=walltime + epoch)
        # Named so the resumed part's file sorts first: the write time decides, not the name.
        [new] = [p for p in folder.iterdir() if p.name.count(".") > 3]
        new.rename(folder / f"events.out.tfevents.{name}")
    log = read_training_log(tmp_path)
    assert log.loss_by_epoch == {1: 0.5, 2: 0.25, 3: 0.125, 4: 0.0625}


def test_a_loss_that_is_not_finite_stays_as_nan(tmp_path) -> None:
    kohya_run(tmp_path, "20260101120000", [0.5, math.nan, math.inf])
    losses = read_training_log(tmp_path).loss_by_epoch
    assert list(losses) == [1, 2, 3] and losses[1] == 0.5
    assert math.isnan(losses[2]) and math.isnan(losses[3])


def test_a_folder_without_a_log_is_refused_naming_it(tmp_path) -> None:
    empty = tmp_path / "my_empty_logs"
    empty.mkdir()
    assert event_files(empty) == []
    with pytest.raises(TrainingLogError, match=r"my_empty_logs holds no TensorBoard event files"):
        read_training_log(empty)
    with pytest.raises(TrainingLogError, match=r"nowhere is not a folder"):
        read_training_log(tmp_path / "nowhere")


def test_step_losses_without_an_epoch_loss_are_refused_naming_the_tags_found(tmp_path) -> None:
    with SummaryWriter(str(tmp_path / "20260101120000" / "network_train")) as writer:
        for step in range(1, 5):
            writer.add_scalar("loss/current", 0.5, step)
            writer.add_scalar("lr/unet", 1e-3, step)
    with pytest.raises(TrainingLogError, match=r"no per-epoch loss .*its scalar tags: loss/current, lr/unet"):
        read_training_log(tmp_path)


def test_the_demo_ships_the_log_of_the_training_that_made_its_checkpoints(demo_dir) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with safe_open(str(demo_dir / "checkpoints" / f"{STEM}.safetensors"), "pt") as handle:
        header = handle.metadata()
    started = calendar.timegm(time.strptime(header["ss_training_started_at"], "%Y-%m-%dT%H:%M:%S"))
    log = read_training_log(demo_dir / "logs", started_at=started)
    assert log.run_dir.name == time.strftime("%Y%m%d%H%M%S", time.gmtime(started))
    assert list(log.loss_by_epoch) == list(range(1, 11))
    assert all(0 < loss < 1 for loss in log.loss_by_epoch.values())
    # Each epoch's loss is the mean of the step losses the trainer logged in that epoch.
    [events] = event_files(log.run_dir)
    accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
    accumulator.Reload()
    steps = {e.step: e.value for e in accumulator.Scalars("loss/current")}
    per_epoch = int(header["ss_num_batches_per_epoch"])
    assert sorted(steps) == list(range(1, 10 * per_epoch + 1))
    for epoch, loss in log.loss_by_epoch.items():
        window = [steps[s] for s in range((epoch - 1) * per_epoch + 1, epoch * per_epoch + 1)]
        assert loss == pytest.approx(sum(window) / per_epoch, rel=1e-6), epoch


def test_a_demo_built_before_the_log_shipped_gets_it(tmp_path) -> None:
    root = ensure_demo(tmp_path / "demo")
    shutil.rmtree(root / "logs")
    ensure_demo(root)
    assert read_training_log(root / "logs").loss_by_epoch.keys() == set(range(1, 11))
    assert sorted(p.name for p in root.iterdir() if p.name.startswith(".")) == []  # no copy left behind


def test_train_logs_without_event_files_is_refused_in_one_line(tmp_path) -> None:
    problems = [p for p in problems_with(f"checkpoint.train_logs={tmp_path}") if "train_logs" in p]
    assert problems == [
        f"checkpoint.train_logs={tmp_path} holds no TensorBoard event files (events.out.tfevents.*); "
        "point it at the trainer's --logging_dir, or null to skip"
    ]
    missing = [p for p in problems_with(f"checkpoint.train_logs={tmp_path}/nowhere") if "train_logs" in p]
    assert missing == [
        f"checkpoint.train_logs={tmp_path}/nowhere is not a folder (the trainer's TensorBoard "
        "--logging_dir, or null to skip)"
    ]


def test_the_demos_train_logs_pass_validation(demo_dir) -> None:
    assert not [p for p in problems_with(f"paths.demo={demo_dir}") if "train_logs" in p]


def test_the_curve_beside_the_score_keeps_a_missing_loss_missing_and_says_so(tmp_path) -> None:
    from bespoke_exp.analysis.training_curve import training_curve

    kohya_run(tmp_path / "logs", "20260101120000", [0.3, math.nan, 0.2, 0.1])
    by_epoch = [{"epoch": e, "mean": m} for e, m in [(0, 0.3), (1, 0.4), (2, 0.6), (3, 0.5), (4, 0.45)]]
    curve = training_curve(str(tmp_path / "logs"), "score", by_epoch, None, heldout_only=True)
    assert math.isnan(curve["loss"][2]) and sorted(curve["score"]) == [1, 2, 3, 4]  # not the base model
    assert curve["sentence"] == (
        "Training curve (loss/epoch_average): the training loss falls from 0.3000 at epoch 1 to "
        "0.1000 at epoch 4 (no finite loss at epoch 2), while the held-out score peaks at epoch 2 "
        "(0.600) and is 0.450 at epoch 4: the LoRA keeps fitting its training captions after the "
        "prompts it never saw stop improving."
    )
    (tmp_path / "empty").mkdir()
    unread = training_curve(str(tmp_path / "empty"), "score", by_epoch, None, heldout_only=False)
    assert set(unread) == {"sentence"} and unread["sentence"].startswith("Training curve: not drawn,")
