"""The training loss per epoch, from the trainer's TensorBoard log (kohya sd-scripts'
`--logging_dir`, given as `checkpoint.train_logs`), to set beside the scores.

kohya writes one folder per run, `<logging_dir>/<log_prefix><YYYYmmddHHMMSS>/network_train/
events.out.tfevents.*`, with the epoch's mean loss as `loss/epoch_average` (`loss/epoch` in
older sd-scripts) at step = epoch, 1-based as the checkpoint files count. Read with
tensorboard's own parser:

    from bespoke_exp.analysis.training_log import read_training_log
    log = read_training_log("~/lora/logs", started_at=1794999600.0)  # ss_training_started_at
    log.loss_by_epoch  # {1: 0.139, 2: 0.127, ...}
"""

from __future__ import annotations

import calendar
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

EVENT_FILES = "events.out.tfevents.*"
# The per-epoch mean loss: sd-scripts' tag now, then its tag before it was renamed.
EPOCH_TAGS = ("loss/epoch_average", "loss/epoch")
MATCH_SECONDS = 600  # a run folder within 10 minutes of the header's start time is that run's
# kohya's run folder: `<log_prefix>` + the start time on the training machine's clock.
_RUN_FOLDER = re.compile(r"(\d{14})$")
_HPARAMS_FOLDER = re.compile(r"\d+\.\d+$")  # add_hparams' subfolder, named str(time.time())


class TrainingLogError(ValueError):
    """The training log can't be read: one line naming the folder and what would be right."""


@dataclass(frozen=True)
class TrainingLog:
    run_dir: Path  # the run folder the losses came from
    tag: str  # the scalar tag they were read from
    loss_by_epoch: dict[int, float]  # epoch (1-based) -> mean training loss; NaN where it was not finite


def event_files(logging_dir: Path) -> list[Path]:
    """Every TensorBoard event file under `logging_dir` (none if it is not a folder)."""
    folder = Path(logging_dir).expanduser()
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob(EVENT_FILES) if p.is_file())


def read_training_log(logging_dir: str | Path, started_at: float | None = None) -> TrainingLog:
    """The mean training loss of every epoch the log records.

    Args:
        logging_dir: kohya's `--logging_dir`, one run folder in it, or its `network_train` folder.
        started_at: the training's start (epoch seconds, the header's `ss_training_started_at`):
            picks the run among several in one logging_dir.
    """
    folder = Path(logging_dir).expanduser()
    if not folder.is_dir():
        raise TrainingLogError(
            f"training log {folder} is not a folder; point it at the trainer's --logging_dir"
        )
    files = event_files(folder)
    if not files:
        raise TrainingLogError(
            f"training log {folder} holds no TensorBoard event files ({EVENT_FILES}); "
            "point it at the trainer's --logging_dir"
        )
    runs: dict[Path, list[Path]] = {}
    for path in files:
        runs.setdefault(_run_dir(path, folder), []).append(path)
    run_dir = _pick_run(folder, sorted(runs), started_at)
    scalars = _merged_scalars(runs[run_dir])
    tag = next((t for t in EPOCH_TAGS if t in scalars), None)
    if tag is None:
        # Step losses alone don't say where an epoch ends (steps per epoch vary with batch
        # size, repeats and gradient accumulation), so no per-epoch mean is made up from them.
        found = ", ".join(sorted(scalars)[:12]) or "none"
        raise TrainingLogError(
            f"training log {run_dir} has no per-epoch loss ({' or '.join(EPOCH_TAGS)}); "
            f"its scalar tags: {found}"
        )
    # A diverged loss is kept, as NaN: the caller decides what a missing value means.
    losses = {step: value if math.isfinite(value) else math.nan for step, value in scalars[tag].items()}
    return TrainingLog(run_dir=run_dir, tag=tag, loss_by_epoch=dict(sorted(losses.items())))


def _run_dir(path: Path, folder: Path) -> Path:
    """The run folder an event file belongs to: its nearest timestamped ancestor (looking up to
    the folder above the one given, which may be the run's `network_train`), else its own folder
    (the one above for an hparams subfolder)."""
    for parent in path.parents:
        if _RUN_FOLDER.search(parent.name):
            return parent
        if parent == folder.parent:
            break
    if _HPARAMS_FOLDER.fullmatch(path.parent.name) and path.parent != folder:
        return path.parent.parent
    return path.parent


def _folder_started(run_dir: Path) -> list[float]:
    """The run folder's start time, in epoch seconds, read as this machine's local time (kohya's
    clock when it trained here) and as UTC (a trainer that logs in UTC, as the demo's)."""
    found = _RUN_FOLDER.search(run_dir.name)
    if not found:
        return []
    moment = time.strptime(found.group(1), "%Y%m%d%H%M%S")
    return [time.mktime(moment), float(calendar.timegm(moment))]


def _pick_run(folder: Path, run_dirs: list[Path], started_at: float | None) -> Path:
    if len(run_dirs) == 1:
        return run_dirs[0]
    names = ", ".join(str(p.relative_to(folder)) if p.is_relative_to(folder) else str(p) for p in run_dirs)
    if started_at is not None:
        distance = {
            run: min((abs(t - started_at) for t in _folder_started(run)), default=math.inf)
            for run in run_dirs
        }
        closest = min(run_dirs, key=distance.__getitem__)
        if distance[closest] <= MATCH_SECONDS:
            return closest
        when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started_at))
        raise TrainingLogError(
            f"training log {folder} holds {len(run_dirs)} runs ({names}) and none started within "
            f"{MATCH_SECONDS // 60} minutes of the checkpoint's training start ({when}); "
            "point train_logs at the run folder that trained it"
        )
    raise TrainingLogError(
        f"training log {folder} holds {len(run_dirs)} runs ({names}); point train_logs at the one "
        "that trained the checkpoints"
    )


def _merged_scalars(paths: list[Path]) -> dict[str, dict[int, float]]:
    """tag -> step -> value over every event file of one run; where a resumed run logged a step
    again, the later write wins."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    latest: dict[str, dict[int, tuple[float, float]]] = {}
    for path in paths:
        accumulator = EventAccumulator(str(path), size_guidance={"scalars": 0})  # 0: keep every point
        accumulator.Reload()
        for tag in accumulator.Tags()["scalars"]:
            by_step = latest.setdefault(tag, {})
            for event in accumulator.Scalars(tag):
                if event.step not in by_step or event.wall_time >= by_step[event.step][0]:
                    by_step[event.step] = (event.wall_time, event.value)
    return {tag: {step: value for step, (_, value) in steps.items()} for tag, steps in latest.items()}
